CREATE TABLE "proxy_domain_templates" (
	"id" uuid PRIMARY KEY,
	"owner_id" uuid NOT NULL,
	"pattern" text NOT NULL CONSTRAINT "proxy_domain_templates_pattern_unique" UNIQUE,
	"target_port" integer NOT NULL,
	"target_protocol" text NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "web_proxies" (
	"id" uuid PRIMARY KEY,
	"owner_id" uuid NOT NULL,
	"instance_id" uuid NOT NULL,
	"host_id" uuid NOT NULL,
	"domain" text NOT NULL CONSTRAINT "web_proxies_domain_unique" UNIQUE,
	"target_address_id" uuid NOT NULL,
	"target_address" text NOT NULL,
	"target_port" integer NOT NULL,
	"target_protocol" text NOT NULL,
	"tls_mode" text NOT NULL,
	"certificate_pem" text,
	"private_key_pem" text,
	"websocket" boolean DEFAULT true NOT NULL,
	"status" text DEFAULT 'pending' NOT NULL,
	"status_error" text,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
ALTER TABLE "users" ADD COLUMN "quota_web_proxies" integer;--> statement-breakpoint
CREATE INDEX "web_proxies_instance_idx" ON "web_proxies" ("instance_id");--> statement-breakpoint
CREATE INDEX "web_proxies_target_idx" ON "web_proxies" ("target_address_id");--> statement-breakpoint
ALTER TABLE "proxy_domain_templates" ADD CONSTRAINT "proxy_domain_templates_owner_id_users_id_fkey" FOREIGN KEY ("owner_id") REFERENCES "users"("id") ON DELETE CASCADE;--> statement-breakpoint
ALTER TABLE "web_proxies" ADD CONSTRAINT "web_proxies_owner_id_users_id_fkey" FOREIGN KEY ("owner_id") REFERENCES "users"("id") ON DELETE RESTRICT;--> statement-breakpoint
ALTER TABLE "web_proxies" ADD CONSTRAINT "web_proxies_instance_id_instances_id_fkey" FOREIGN KEY ("instance_id") REFERENCES "instances"("id") ON DELETE RESTRICT;--> statement-breakpoint
ALTER TABLE "web_proxies" ADD CONSTRAINT "web_proxies_host_id_hosts_id_fkey" FOREIGN KEY ("host_id") REFERENCES "hosts"("id") ON DELETE RESTRICT;--> statement-breakpoint
ALTER TABLE "web_proxies" ADD CONSTRAINT "web_proxies_target_address_id_ip_allocations_id_fkey" FOREIGN KEY ("target_address_id") REFERENCES "ip_allocations"("id") ON DELETE RESTRICT;