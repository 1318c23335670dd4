CREATE TABLE "address_usage" (
	"owner_id" uuid,
	"family" integer,
	"used" integer DEFAULT 0 NOT NULL,
	CONSTRAINT "address_usage_pkey" PRIMARY KEY("owner_id","family"),
	CONSTRAINT "address_usage_family_check" CHECK ("family" in (4, 6)),
	CONSTRAINT "address_usage_used_check" CHECK ("used" >= 0)
);
--> statement-breakpoint
ALTER TABLE "address_usage" ADD CONSTRAINT "address_usage_owner_id_users_id_fkey" FOREIGN KEY ("owner_id") REFERENCES "users"("id") ON DELETE CASCADE;--> statement-breakpoint
-- what every user holds already, so quotas keep counting the addresses allocated before this migration
INSERT INTO "address_usage" ("owner_id", "family", "used")
SELECT a."owner_id", p."family", count(*)::int
FROM "ip_allocations" a JOIN "ip_pools" p ON p."id" = a."pool_id"
WHERE a."kind" = 'allocated' AND a."owner_id" IS NOT NULL
GROUP BY a."owner_id", p."family";
