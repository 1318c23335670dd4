CREATE TABLE "port_forward_removals" (
	"host_id" uuid,
	"forward_id" uuid,
	"revision" bigint,
	"removed_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "port_forward_removals_pkey" PRIMARY KEY("host_id","revision","forward_id")
);
--> statement-breakpoint
CREATE INDEX "port_forwards_host_revision_idx" ON "port_forwards" ("host_id","changed_revision");
--> statement-breakpoint
-- Every deletion of port forwards leaves tombstones with the host's revision in the deleting
-- transaction (it bumped the revision first), so a desired-state stream can send "forward gone" as
-- a patch; the host's tombstones older than an hour go at the same time. One statement per
-- DELETE, however many rows it removes.
CREATE FUNCTION "port_forwards_removed"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO "port_forward_removals" ("host_id", "forward_id", "revision")
    SELECT g."host_id", g."id", h."desired_revision" FROM "gone" g JOIN "hosts" h ON h."id" = g."host_id"
    ON CONFLICT DO NOTHING;
  DELETE FROM "port_forward_removals" r
    WHERE r."host_id" IN (SELECT DISTINCT "host_id" FROM "gone") AND r."removed_at" < now() - interval '1 hour';
  RETURN NULL;
END
$$;
--> statement-breakpoint
CREATE TRIGGER "port_forwards_removed" AFTER DELETE ON "port_forwards"
  REFERENCING OLD TABLE AS "gone" FOR EACH STATEMENT EXECUTE FUNCTION "port_forwards_removed"();
