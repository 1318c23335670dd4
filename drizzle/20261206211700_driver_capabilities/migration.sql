ALTER TABLE "hosts" ADD COLUMN "driver" jsonb;--> statement-breakpoint
ALTER TABLE "nics" ADD COLUMN "status" text DEFAULT 'pending' NOT NULL;--> statement-breakpoint
ALTER TABLE "nics" ADD COLUMN "status_error" text;--> statement-breakpoint
ALTER TABLE "nics" ADD COLUMN "changed_revision" bigint DEFAULT 0 NOT NULL;