"""Reads an Iceberg table the way a lake user would (pyiceberg, SQL catalog) and prints it as
JSON for the iceberg sink's tests: rows, the partition spec, the current snapshot's summary,
the number of snapshots, and the rows a filter on a partition column keeps (partition pruning).

usage: read_table.py CATALOG_URI WAREHOUSE TABLE [COLUMNS] [FILTER]
CATALOG_URI is a SQLAlchemy URL (SQL catalog) or `glue` (AWS Glue, endpoint in the properties).
Catalog properties beyond uri and warehouse (an S3 warehouse's endpoint and keys) come as a JSON
object in SLUICE_ICEBERG_PROPERTIES."""
import json
import os
import sys

from pyiceberg.catalog import load_catalog
from pyiceberg.catalog.sql import SqlCatalog

uri, warehouse, name = sys.argv[1:4]
columns = sys.argv[4].split(",") if len(sys.argv) > 4 and sys.argv[4] else None
row_filter = sys.argv[5] if len(sys.argv) > 5 else None
properties = json.loads(os.environ.get("SLUICE_ICEBERG_PROPERTIES", "{}"))
if uri == "glue":
    catalog = load_catalog("default", type="glue", warehouse=warehouse, **properties)
else:
    catalog = SqlCatalog("default", uri=uri, warehouse=warehouse, **properties)
table = catalog.load_table(name)
scan = table.scan(selected_fields=tuple(columns) if columns else ("*",))
arrow = scan.to_arrow()
rows = [[None if v is None else (v.isoformat() if hasattr(v, "isoformat") else v) for v in row.values()]
        for row in arrow.to_pylist()]
out = {
    "rows": rows,
    "columns": arrow.schema.names,
    "spec": [[f.name, str(f.transform)] for f in table.spec().fields],
    "summary": dict(table.current_snapshot().summary.additional_properties) if table.current_snapshot() else {},
    "snapshots": len(table.snapshots()),
    "schemas": len(table.schemas()),
    "types": {f.name: str(f.field_type) for f in table.schema().fields},
}
if row_filter:
    pruned = table.scan(row_filter=row_filter)
    out["filtered_rows"] = pruned.to_arrow().num_rows
    out["filtered_files"] = len(list(pruned.plan_files()))
    out["all_files"] = len(list(table.scan().plan_files()))
print(json.dumps(out))
