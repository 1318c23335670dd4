ALTER TABLE "host_agents" ADD COLUMN "started_from" text;--> statement-breakpoint
ALTER TABLE "host_agents" ADD COLUMN "cached_revision" bigint;