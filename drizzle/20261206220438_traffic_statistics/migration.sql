CREATE TABLE "traffic_buckets" (
	"resolution" text,
	"object_type" text,
	"object_id" uuid,
	"start" timestamp with time zone,
	"host_id" uuid NOT NULL,
	"instance_id" uuid,
	"rx_bytes" bigint DEFAULT 0 NOT NULL,
	"tx_bytes" bigint DEFAULT 0 NOT NULL,
	"rx_packets" bigint DEFAULT 0 NOT NULL,
	"tx_packets" bigint DEFAULT 0 NOT NULL,
	CONSTRAINT "traffic_buckets_pkey" PRIMARY KEY("resolution","object_type","object_id","start")
);
--> statement-breakpoint
CREATE TABLE "traffic_counters" (
	"object_type" text,
	"object_id" uuid,
	"host_id" uuid NOT NULL,
	"epoch" text NOT NULL,
	"sequence" bigint NOT NULL,
	"read_at" timestamp with time zone NOT NULL,
	"rx_bytes" bigint NOT NULL,
	"rx_packets" bigint NOT NULL,
	"tx_bytes" bigint NOT NULL,
	"tx_packets" bigint NOT NULL,
	CONSTRAINT "traffic_counters_pkey" PRIMARY KEY("object_type","object_id")
);
--> statement-breakpoint
CREATE TABLE "traffic_periods" (
	"object_type" text,
	"object_id" uuid,
	"period_start" timestamp with time zone,
	"period_end" timestamp with time zone NOT NULL,
	"host_id" uuid NOT NULL,
	"instance_id" uuid,
	"rx_bytes" bigint DEFAULT 0 NOT NULL,
	"tx_bytes" bigint DEFAULT 0 NOT NULL,
	"rx_packets" bigint DEFAULT 0 NOT NULL,
	"tx_packets" bigint DEFAULT 0 NOT NULL,
	CONSTRAINT "traffic_periods_pkey" PRIMARY KEY("object_type","object_id","period_start")
);
--> statement-breakpoint
CREATE TABLE "traffic_rollups" (
	"id" text PRIMARY KEY,
	"rolled_until" timestamp with time zone NOT NULL
);
--> statement-breakpoint
ALTER TABLE "hosts" ADD COLUMN "traffic_cap_bps" bigint;--> statement-breakpoint
ALTER TABLE "users" ADD COLUMN "billing_day" integer;--> statement-breakpoint
CREATE INDEX "traffic_buckets_instance_idx" ON "traffic_buckets" ("resolution","instance_id","start");--> statement-breakpoint
CREATE INDEX "traffic_buckets_start_idx" ON "traffic_buckets" ("resolution","start");--> statement-breakpoint
CREATE INDEX "traffic_periods_instance_idx" ON "traffic_periods" ("instance_id","period_start");