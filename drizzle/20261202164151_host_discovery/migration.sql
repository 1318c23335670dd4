ALTER TABLE "hosts" ADD COLUMN "default_pool_id" uuid;--> statement-breakpoint
ALTER TABLE "hosts" ADD COLUMN "discovery_owner_id" uuid;--> statement-breakpoint
ALTER TABLE "instances" ADD COLUMN "last_discovered_at" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "hosts" ADD CONSTRAINT "hosts_discovery_owner_id_users_id_fkey" FOREIGN KEY ("discovery_owner_id") REFERENCES "users"("id") ON DELETE SET NULL;