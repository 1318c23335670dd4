-- Port forwards may not overlap on a host: same protocol (both overlaps tcp and udp), same
-- address (all addresses overlaps every address) and overlapping host ports. The database
-- enforces it, so concurrent requests and several controllers get exactly one winner.
CREATE EXTENSION IF NOT EXISTS btree_gist;
--> statement-breakpoint
ALTER TABLE "port_forwards" ADD CONSTRAINT "port_forwards_no_overlap" EXCLUDE USING gist (
	"host_id" WITH =,
	int4range("proto_lo", "proto_hi", '[]') WITH &&,
	numrange("addr_lo", "addr_hi", '[]') WITH &&,
	int4range("host_port_start", "host_port_end", '[]') WITH &&
);
