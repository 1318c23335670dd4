CREATE TABLE "ssh_keys" (
	"id" uuid PRIMARY KEY,
	"user_id" uuid NOT NULL,
	"name" text NOT NULL,
	"algorithm" text NOT NULL,
	"public_key" text NOT NULL,
	"fingerprint" text NOT NULL CONSTRAINT "ssh_keys_fingerprint_unique" UNIQUE,
	"last_used_at" timestamp with time zone,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "ssh_sessions" (
	"id" uuid PRIMARY KEY,
	"user_id" uuid,
	"key_fingerprint" text NOT NULL,
	"instance_id" uuid,
	"target_address" text NOT NULL,
	"target_port" integer NOT NULL,
	"source_address" text NOT NULL,
	"started_at" timestamp with time zone DEFAULT now() NOT NULL,
	"ended_at" timestamp with time zone,
	"bytes_to_instance" bigint DEFAULT 0 NOT NULL,
	"bytes_from_instance" bigint DEFAULT 0 NOT NULL,
	"end_reason" text
);
--> statement-breakpoint
CREATE INDEX "ssh_keys_user_idx" ON "ssh_keys" ("user_id");--> statement-breakpoint
CREATE INDEX "ssh_sessions_user_idx" ON "ssh_sessions" ("user_id","started_at");--> statement-breakpoint
ALTER TABLE "ssh_keys" ADD CONSTRAINT "ssh_keys_user_id_users_id_fkey" FOREIGN KEY ("user_id") REFERENCES "users"("id") ON DELETE CASCADE;--> statement-breakpoint
ALTER TABLE "ssh_sessions" ADD CONSTRAINT "ssh_sessions_user_id_users_id_fkey" FOREIGN KEY ("user_id") REFERENCES "users"("id") ON DELETE SET NULL;--> statement-breakpoint
ALTER TABLE "ssh_sessions" ADD CONSTRAINT "ssh_sessions_instance_id_instances_id_fkey" FOREIGN KEY ("instance_id") REFERENCES "instances"("id") ON DELETE SET NULL;