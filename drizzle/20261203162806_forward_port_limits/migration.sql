ALTER TABLE "hosts" ADD COLUMN "max_forward_ports" integer DEFAULT 1000 NOT NULL;--> statement-breakpoint
ALTER TABLE "users" ADD COLUMN "quota_forwarded_ports" integer;--> statement-breakpoint
ALTER TABLE "hosts" ADD CONSTRAINT "hosts_max_forward_ports_check" CHECK ("max_forward_ports" between 1 and 65535);