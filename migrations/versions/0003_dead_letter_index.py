"""dead letter index

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 22:28:21.239667
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_jobs_dead', 'jobs', ['queue', 'kind', 'last_error_type'], unique=False, postgresql_where=sa.text("status = 'dead'"))


def downgrade() -> None:
    op.drop_index('ix_jobs_dead', table_name='jobs', postgresql_where=sa.text("status = 'dead'"))
