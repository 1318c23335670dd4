ALTER TABLE "host_agents" ADD COLUMN "listening_sockets" jsonb;--> statement-breakpoint
ALTER TABLE "host_agents" ADD COLUMN "listening_sockets_at" timestamp with time zone;