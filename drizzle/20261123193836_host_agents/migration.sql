CREATE TABLE "host_agent_connections" (
	"id" uuid PRIMARY KEY,
	"host_id" uuid NOT NULL,
	"token_id" uuid NOT NULL,
	"connected_at" timestamp with time zone DEFAULT now() NOT NULL,
	"last_seen_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "host_agents" (
	"host_id" uuid PRIMARY KEY,
	"last_seen_at" timestamp with time zone,
	"applied_revision" bigint,
	"applied_at" timestamp with time zone,
	"last_error" text,
	"agent_version" text,
	"plugin_id" text,
	"discovered_instances" jsonb DEFAULT '[]' NOT NULL,
	"discovered_at" timestamp with time zone,
	"last_drift_at" timestamp with time zone,
	"drift_repairs" integer DEFAULT 0 NOT NULL
);
--> statement-breakpoint
ALTER TABLE "bandwidth_limits" ADD COLUMN "changed_revision" bigint DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE "firewall_rules" ADD COLUMN "changed_revision" bigint DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE "port_forwards" ADD COLUMN "changed_revision" bigint DEFAULT 0 NOT NULL;--> statement-breakpoint
CREATE INDEX "host_agent_connections_host_idx" ON "host_agent_connections" ("host_id","last_seen_at");--> statement-breakpoint
ALTER TABLE "host_agent_connections" ADD CONSTRAINT "host_agent_connections_host_id_hosts_id_fkey" FOREIGN KEY ("host_id") REFERENCES "hosts"("id") ON DELETE CASCADE;--> statement-breakpoint
ALTER TABLE "host_agent_connections" ADD CONSTRAINT "host_agent_connections_token_id_api_tokens_id_fkey" FOREIGN KEY ("token_id") REFERENCES "api_tokens"("id") ON DELETE CASCADE;--> statement-breakpoint
ALTER TABLE "host_agents" ADD CONSTRAINT "host_agents_host_id_hosts_id_fkey" FOREIGN KEY ("host_id") REFERENCES "hosts"("id") ON DELETE CASCADE;