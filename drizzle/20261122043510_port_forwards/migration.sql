CREATE TABLE "port_forwards" (
	"id" uuid PRIMARY KEY,
	"host_id" uuid NOT NULL,
	"instance_id" uuid NOT NULL,
	"owner_id" uuid NOT NULL,
	"protocol" text NOT NULL,
	"host_address" text,
	"host_port_start" integer NOT NULL,
	"host_port_end" integer NOT NULL,
	"target_address_id" uuid NOT NULL,
	"target_address" text NOT NULL,
	"target_port_start" integer NOT NULL,
	"source_cidrs" jsonb NOT NULL,
	"note" text DEFAULT '' NOT NULL,
	"status" text DEFAULT 'pending' NOT NULL,
	"status_error" text,
	"proto_lo" integer NOT NULL,
	"proto_hi" integer NOT NULL,
	"addr_lo" numeric(40,0) NOT NULL,
	"addr_hi" numeric(40,0) NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "port_forwards_ports_check" CHECK ("host_port_start" between 1 and "host_port_end" and "host_port_end" <= 65535 and "target_port_start" between 1 and 65535 and "target_port_start" + ("host_port_end" - "host_port_start") <= 65535)
);
--> statement-breakpoint
ALTER TABLE "hosts" ADD COLUMN "desired_revision" bigint DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE "users" ADD COLUMN "quota_port_forwards" integer;--> statement-breakpoint
CREATE INDEX "port_forwards_instance_idx" ON "port_forwards" ("instance_id");--> statement-breakpoint
CREATE INDEX "port_forwards_owner_idx" ON "port_forwards" ("owner_id");--> statement-breakpoint
CREATE INDEX "port_forwards_target_idx" ON "port_forwards" ("target_address_id");--> statement-breakpoint
ALTER TABLE "port_forwards" ADD CONSTRAINT "port_forwards_host_id_hosts_id_fkey" FOREIGN KEY ("host_id") REFERENCES "hosts"("id") ON DELETE RESTRICT;--> statement-breakpoint
ALTER TABLE "port_forwards" ADD CONSTRAINT "port_forwards_instance_id_instances_id_fkey" FOREIGN KEY ("instance_id") REFERENCES "instances"("id") ON DELETE RESTRICT;--> statement-breakpoint
ALTER TABLE "port_forwards" ADD CONSTRAINT "port_forwards_owner_id_users_id_fkey" FOREIGN KEY ("owner_id") REFERENCES "users"("id") ON DELETE RESTRICT;--> statement-breakpoint
ALTER TABLE "port_forwards" ADD CONSTRAINT "port_forwards_target_address_id_ip_allocations_id_fkey" FOREIGN KEY ("target_address_id") REFERENCES "ip_allocations"("id") ON DELETE RESTRICT;