ALTER TABLE "port_forwards" ADD COLUMN "rate_limited_connections" bigint DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE "port_forwards" ADD COLUMN "rate_limited_since" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "port_forwards" ADD COLUMN "rate_limited_epoch" text;--> statement-breakpoint
ALTER TABLE "port_forwards" ADD COLUMN "rate_limited_raw" bigint;