CREATE TABLE "port_forward_imports" (
	"id" uuid PRIMARY KEY,
	"host_id" uuid NOT NULL,
	"actor_user_id" uuid,
	"state" text NOT NULL,
	"forwards" integer NOT NULL,
	"reserved" jsonb NOT NULL,
	"touched_at" timestamp with time zone DEFAULT now() NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
ALTER TABLE "audit_log" ADD COLUMN "import_id" uuid;--> statement-breakpoint
ALTER TABLE "port_forwards" ADD COLUMN "import_id" uuid;--> statement-breakpoint
CREATE INDEX "audit_log_import_idx" ON "audit_log" ("import_id");--> statement-breakpoint
CREATE INDEX "port_forwards_import_idx" ON "port_forwards" ("import_id");--> statement-breakpoint
ALTER TABLE "port_forward_imports" ADD CONSTRAINT "port_forward_imports_host_id_hosts_id_fkey" FOREIGN KEY ("host_id") REFERENCES "hosts"("id") ON DELETE CASCADE;