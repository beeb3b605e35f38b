"""fhir_resources identifier index: no GIN pending list (fastupdate off)

Every transform searches this index to match its Patient. With GIN's default fastupdate, new
entries wait in a pending list that every search scans in full until VACUUM (or a 4 MB list)
merges them: 1-2 ms per search at 20,000 pending entries, growing until then. Without it each
insert updates the index in place, and a search costs ~0.02 ms.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-02 05:05:00
"""

from __future__ import annotations

from alembic import op

revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER INDEX ix_fhir_resources_identifier SET (fastupdate = off)")
    # Entries already pending stay there until merged: merge them now.
    op.execute("SELECT gin_clean_pending_list('ix_fhir_resources_identifier'::regclass)")


def downgrade() -> None:
    op.execute("ALTER INDEX ix_fhir_resources_identifier RESET (fastupdate)")
