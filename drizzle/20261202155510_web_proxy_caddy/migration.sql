CREATE TABLE "web_proxy_traffic" (
	"proxy_id" uuid PRIMARY KEY,
	"requests" bigint DEFAULT 0 NOT NULL,
	"bytes_sent" bigint DEFAULT 0 NOT NULL,
	"bytes_received" bigint DEFAULT 0 NOT NULL,
	"server_errors" bigint DEFAULT 0 NOT NULL,
	"last_request_at" timestamp with time zone
);
--> statement-breakpoint
ALTER TABLE "web_proxies" ADD COLUMN "cert_issuer" text;--> statement-breakpoint
ALTER TABLE "web_proxies" ADD COLUMN "cert_not_after" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "web_proxies" ADD COLUMN "cert_error" text;--> statement-breakpoint
ALTER TABLE "web_proxies" ADD COLUMN "cert_checked_at" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "web_proxies" ADD COLUMN "target_state" text;--> statement-breakpoint
ALTER TABLE "web_proxies" ADD COLUMN "target_detail" text;--> statement-breakpoint
ALTER TABLE "web_proxies" ADD COLUMN "target_checked_at" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "web_proxy_traffic" ADD CONSTRAINT "web_proxy_traffic_proxy_id_web_proxies_id_fkey" FOREIGN KEY ("proxy_id") REFERENCES "web_proxies"("id") ON DELETE CASCADE;