CREATE TABLE "traffic_quota_states" (
	"limit_id" uuid PRIMARY KEY,
	"instance_id" uuid NOT NULL,
	"period_start" timestamp with time zone NOT NULL,
	"level" text NOT NULL,
	"throttled" boolean NOT NULL,
	"used_bytes" bigint NOT NULL,
	"quota_bytes" bigint NOT NULL,
	"changed_at" timestamp with time zone NOT NULL
);
--> statement-breakpoint
ALTER TABLE "traffic_quota_states" ADD CONSTRAINT "traffic_quota_states_limit_id_bandwidth_limits_id_fkey" FOREIGN KEY ("limit_id") REFERENCES "bandwidth_limits"("id") ON DELETE CASCADE;