CREATE TABLE "firewall_rules" (
	"id" uuid PRIMARY KEY,
	"instance_id" uuid NOT NULL,
	"owner_id" uuid NOT NULL,
	"direction" text NOT NULL,
	"protocol" text NOT NULL,
	"source_cidr" text,
	"destination_cidr" text,
	"ports" jsonb NOT NULL,
	"action" text NOT NULL,
	"priority" integer NOT NULL,
	"enabled" boolean DEFAULT true NOT NULL,
	"note" text DEFAULT '' NOT NULL,
	"status" text DEFAULT 'pending' NOT NULL,
	"status_error" text,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "firewall_rules_priority_check" CHECK ("priority" between 1 and 10000)
);
--> statement-breakpoint
CREATE TABLE "firewall_templates" (
	"id" uuid PRIMARY KEY,
	"owner_id" uuid NOT NULL,
	"name" text NOT NULL,
	"inbound_policy" text NOT NULL,
	"outbound_policy" text NOT NULL,
	"rules" jsonb NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "firewall_templates_owner_name_unique" UNIQUE("owner_id","name")
);
--> statement-breakpoint
ALTER TABLE "instances" ADD COLUMN "firewall_inbound_policy" text DEFAULT 'allow' NOT NULL;--> statement-breakpoint
ALTER TABLE "instances" ADD COLUMN "firewall_outbound_policy" text DEFAULT 'allow' NOT NULL;--> statement-breakpoint
CREATE INDEX "firewall_rules_instance_idx" ON "firewall_rules" ("instance_id","direction","priority","id");--> statement-breakpoint
ALTER TABLE "firewall_rules" ADD CONSTRAINT "firewall_rules_instance_id_instances_id_fkey" FOREIGN KEY ("instance_id") REFERENCES "instances"("id") ON DELETE RESTRICT;--> statement-breakpoint
ALTER TABLE "firewall_rules" ADD CONSTRAINT "firewall_rules_owner_id_users_id_fkey" FOREIGN KEY ("owner_id") REFERENCES "users"("id") ON DELETE RESTRICT;--> statement-breakpoint
ALTER TABLE "firewall_templates" ADD CONSTRAINT "firewall_templates_owner_id_users_id_fkey" FOREIGN KEY ("owner_id") REFERENCES "users"("id") ON DELETE CASCADE;