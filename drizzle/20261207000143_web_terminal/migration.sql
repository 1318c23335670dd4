CREATE TABLE "instance_ssh_host_keys" (
	"instance_id" uuid,
	"algorithm" text,
	"public_key" text NOT NULL,
	"fingerprint" text NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "instance_ssh_host_keys_pkey" PRIMARY KEY("instance_id","algorithm")
);
--> statement-breakpoint
CREATE TABLE "terminal_tickets" (
	"secret_hash" text PRIMARY KEY,
	"user_id" uuid NOT NULL,
	"instance_id" uuid NOT NULL,
	"username" text NOT NULL,
	"expires_at" timestamp with time zone NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE INDEX "terminal_tickets_expires_idx" ON "terminal_tickets" ("expires_at");--> statement-breakpoint
ALTER TABLE "instance_ssh_host_keys" ADD CONSTRAINT "instance_ssh_host_keys_instance_id_instances_id_fkey" FOREIGN KEY ("instance_id") REFERENCES "instances"("id") ON DELETE CASCADE;--> statement-breakpoint
ALTER TABLE "terminal_tickets" ADD CONSTRAINT "terminal_tickets_user_id_users_id_fkey" FOREIGN KEY ("user_id") REFERENCES "users"("id") ON DELETE CASCADE;--> statement-breakpoint
ALTER TABLE "terminal_tickets" ADD CONSTRAINT "terminal_tickets_instance_id_instances_id_fkey" FOREIGN KEY ("instance_id") REFERENCES "instances"("id") ON DELETE CASCADE;