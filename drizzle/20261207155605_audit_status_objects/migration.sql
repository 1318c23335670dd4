CREATE TABLE "audit_status_objects" (
	"audit_id" uuid,
	"object_type" text,
	"status" text,
	"object_ids" uuid[] NOT NULL,
	CONSTRAINT "audit_status_objects_pkey" PRIMARY KEY("audit_id","object_type","status")
);
