CREATE TABLE "api_tokens" (
	"id" uuid PRIMARY KEY,
	"user_id" uuid NOT NULL,
	"name" text NOT NULL,
	"scope" text NOT NULL,
	"secret_hash" text NOT NULL CONSTRAINT "api_tokens_secret_hash_unique" UNIQUE,
	"prefix" text NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"last_used_at" timestamp with time zone,
	"revoked_at" timestamp with time zone
);
--> statement-breakpoint
CREATE TABLE "audit_log" (
	"id" uuid PRIMARY KEY,
	"at" timestamp with time zone DEFAULT now() NOT NULL,
	"request_id" text NOT NULL,
	"actor_user_id" uuid,
	"token_id" uuid,
	"action" text NOT NULL,
	"object_type" text NOT NULL,
	"object_id" text NOT NULL,
	"owner_id" uuid,
	"before" jsonb,
	"after" jsonb
);
--> statement-breakpoint
CREATE TABLE "hosts" (
	"id" uuid PRIMARY KEY,
	"name" text NOT NULL CONSTRAINT "hosts_name_unique" UNIQUE,
	"backend" text NOT NULL,
	"port_range_start" integer NOT NULL,
	"port_range_end" integer NOT NULL,
	"reserved_ports" jsonb NOT NULL,
	"public_addresses" jsonb NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "hosts_port_range_check" CHECK ("port_range_start" between 1 and "port_range_end" and "port_range_end" <= 65535)
);
--> statement-breakpoint
CREATE TABLE "instances" (
	"id" uuid PRIMARY KEY,
	"host_id" uuid NOT NULL,
	"owner_id" uuid NOT NULL,
	"name" text NOT NULL,
	"external_id" text,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "instances_host_name_unique" UNIQUE("host_id","name")
);
--> statement-breakpoint
CREATE TABLE "ip_allocations" (
	"id" uuid PRIMARY KEY,
	"pool_id" uuid NOT NULL,
	"slot" numeric(40,0) NOT NULL,
	"address" text NOT NULL,
	"prefix_length" integer NOT NULL,
	"kind" text NOT NULL,
	"nic_id" uuid,
	"owner_id" uuid,
	"note" text DEFAULT '' NOT NULL,
	"idempotency_key" text,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "ip_allocations_pool_slot_unique" UNIQUE("pool_id","slot"),
	CONSTRAINT "ip_allocations_owner_key_unique" UNIQUE("owner_id","idempotency_key"),
	CONSTRAINT "ip_allocations_nic_check" CHECK (("kind" = 'allocated') = ("nic_id" is not null))
);
--> statement-breakpoint
CREATE TABLE "ip_pools" (
	"id" uuid PRIMARY KEY,
	"name" text NOT NULL CONSTRAINT "ip_pools_name_unique" UNIQUE,
	"kind" text NOT NULL,
	"network" text NOT NULL,
	"family" integer NOT NULL,
	"subnet" text NOT NULL,
	"range_start" text NOT NULL,
	"range_end" text NOT NULL,
	"gateway" text,
	"dns" jsonb NOT NULL,
	"host_id" uuid,
	"delegated_prefix_length" integer,
	"free_slot_hint" numeric(40,0) DEFAULT '0' NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "ip_pools_family_check" CHECK ("family" in (4, 6))
);
--> statement-breakpoint
CREATE TABLE "nics" (
	"id" uuid PRIMARY KEY,
	"instance_id" uuid NOT NULL,
	"name" text NOT NULL,
	"mac" text NOT NULL CONSTRAINT "nics_mac_unique" UNIQUE,
	"network" text NOT NULL,
	"idempotency_key" text,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "nics_instance_name_unique" UNIQUE("instance_id","name"),
	CONSTRAINT "nics_instance_key_unique" UNIQUE("instance_id","idempotency_key")
);
--> statement-breakpoint
CREATE TABLE "users" (
	"id" uuid PRIMARY KEY,
	"name" text NOT NULL CONSTRAINT "users_name_unique" UNIQUE,
	"role" text NOT NULL,
	"quota_ipv4_addresses" integer,
	"quota_ipv6_prefixes" integer,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE INDEX "audit_log_owner_idx" ON "audit_log" ("owner_id","id");--> statement-breakpoint
CREATE INDEX "audit_log_object_idx" ON "audit_log" ("object_type","object_id");--> statement-breakpoint
CREATE INDEX "instances_owner_idx" ON "instances" ("owner_id");--> statement-breakpoint
CREATE INDEX "ip_allocations_nic_idx" ON "ip_allocations" ("nic_id");--> statement-breakpoint
CREATE INDEX "ip_allocations_owner_idx" ON "ip_allocations" ("owner_id");--> statement-breakpoint
CREATE INDEX "ip_pools_network_idx" ON "ip_pools" ("network");--> statement-breakpoint
ALTER TABLE "api_tokens" ADD CONSTRAINT "api_tokens_user_id_users_id_fkey" FOREIGN KEY ("user_id") REFERENCES "users"("id") ON DELETE CASCADE;--> statement-breakpoint
ALTER TABLE "instances" ADD CONSTRAINT "instances_host_id_hosts_id_fkey" FOREIGN KEY ("host_id") REFERENCES "hosts"("id") ON DELETE RESTRICT;--> statement-breakpoint
ALTER TABLE "instances" ADD CONSTRAINT "instances_owner_id_users_id_fkey" FOREIGN KEY ("owner_id") REFERENCES "users"("id") ON DELETE RESTRICT;--> statement-breakpoint
ALTER TABLE "ip_allocations" ADD CONSTRAINT "ip_allocations_pool_id_ip_pools_id_fkey" FOREIGN KEY ("pool_id") REFERENCES "ip_pools"("id") ON DELETE RESTRICT;--> statement-breakpoint
ALTER TABLE "ip_allocations" ADD CONSTRAINT "ip_allocations_nic_id_nics_id_fkey" FOREIGN KEY ("nic_id") REFERENCES "nics"("id") ON DELETE RESTRICT;--> statement-breakpoint
ALTER TABLE "ip_allocations" ADD CONSTRAINT "ip_allocations_owner_id_users_id_fkey" FOREIGN KEY ("owner_id") REFERENCES "users"("id") ON DELETE RESTRICT;--> statement-breakpoint
ALTER TABLE "ip_pools" ADD CONSTRAINT "ip_pools_host_id_hosts_id_fkey" FOREIGN KEY ("host_id") REFERENCES "hosts"("id") ON DELETE RESTRICT;--> statement-breakpoint
ALTER TABLE "nics" ADD CONSTRAINT "nics_instance_id_instances_id_fkey" FOREIGN KEY ("instance_id") REFERENCES "instances"("id") ON DELETE CASCADE;