CREATE TABLE "bandwidth_limits" (
	"id" uuid PRIMARY KEY,
	"instance_id" uuid NOT NULL,
	"nic_id" uuid,
	"owner_id" uuid NOT NULL,
	"ingress_bps" bigint,
	"egress_bps" bigint,
	"ingress_burst_bytes" bigint,
	"egress_burst_bytes" bigint,
	"monthly_quota_bytes" bigint,
	"quota_action" text,
	"throttle_bps" bigint,
	"status" text DEFAULT 'pending' NOT NULL,
	"status_error" text,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "bandwidth_limits_target_unique" UNIQUE NULLS NOT DISTINCT("instance_id","nic_id")
);
--> statement-breakpoint
ALTER TABLE "bandwidth_limits" ADD CONSTRAINT "bandwidth_limits_instance_id_instances_id_fkey" FOREIGN KEY ("instance_id") REFERENCES "instances"("id") ON DELETE RESTRICT;--> statement-breakpoint
ALTER TABLE "bandwidth_limits" ADD CONSTRAINT "bandwidth_limits_nic_id_nics_id_fkey" FOREIGN KEY ("nic_id") REFERENCES "nics"("id") ON DELETE RESTRICT;--> statement-breakpoint
ALTER TABLE "bandwidth_limits" ADD CONSTRAINT "bandwidth_limits_owner_id_users_id_fkey" FOREIGN KEY ("owner_id") REFERENCES "users"("id") ON DELETE RESTRICT;