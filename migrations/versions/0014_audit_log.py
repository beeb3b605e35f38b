"""audit log: hash-chained append-only audit events, chain heads, archives, legal holds

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02 05:10:00.000000

The chaining and append-only rules are triggers, so they hold for every client of the database,
not only for Triage's code. The canonical form hashed by `audit_canonical` is documented in
`app/services/audit.py`, which recomputes it independently; change both together or never.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None

#: The retention floor enforced by the DELETE trigger (TRIAGE_AUDIT_RETENTION_DAYS may only be longer).
RETENTION_FLOOR_DAYS = 90

FUNCTIONS = f"""
CREATE FUNCTION audit_field(value text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN value IS NULL THEN '' ELSE char_length(value)::text || ':' || value END
$$;

CREATE FUNCTION audit_canonical(e audit_events) RETURNS text LANGUAGE sql STABLE AS $$
    SELECT audit_field(e.chain::text) || '|' || audit_field(e.seq::text)
        || '|' || audit_field(((extract(epoch FROM e.occurred_at) * 1000)::bigint)::text)
        || '|' || audit_field(e.organisation_id::text) || '|' || audit_field(e.action)
        || '|' || audit_field(e.outcome) || '|' || audit_field(e.actor_type) || '|' || audit_field(e.actor_id)
        || '|' || audit_field(e.resource_type) || '|' || audit_field(e.resource_id)
        || '|' || audit_field(e.patient_id) || '|' || audit_field(e.request_id)
        || '|' || audit_field(e.job_id::text) || '|' || audit_field(e.source_ip) || '|' || audit_field(e.user_agent)
$$;

-- Links a new record to the head of its chain. The head row's lock (held to commit) serialises
-- the writers of one chain; the first writer of a chain creates the head, racing safely.
CREATE FUNCTION audit_events_chain() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    head audit_chain_heads%ROWTYPE;
BEGIN
    NEW.chain := COALESCE(NEW.organisation_id, 0);
    SELECT * INTO head FROM audit_chain_heads WHERE chain = NEW.chain FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO audit_chain_heads (chain, seq, hash) VALUES (NEW.chain, 0, repeat('0', 64))
            ON CONFLICT (chain) DO NOTHING;
        SELECT * INTO head FROM audit_chain_heads WHERE chain = NEW.chain FOR UPDATE;
    END IF;
    NEW.seq := head.seq + 1;
    NEW.prev_hash := head.hash;
    NEW.occurred_at := date_trunc('milliseconds', clock_timestamp());
    NEW.hash := encode(sha256(convert_to(NEW.prev_hash || '|' || audit_canonical(NEW), 'UTF8')), 'hex');
    UPDATE audit_chain_heads SET seq = NEW.seq, hash = NEW.hash WHERE chain = NEW.chain;
    RETURN NEW;
END
$$;

CREATE FUNCTION audit_reject() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% on % is not allowed: the audit log is append-only', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;

-- A record may go only once archived (its chain's archive holds its seq, for its UTC day or a
-- later one after a clock step), past the retention floor, and with no active legal hold.
CREATE FUNCTION audit_events_guard_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.occurred_at >= now() - interval '{RETENTION_FLOOR_DAYS} days' THEN
        RAISE EXCEPTION 'audit record % is within the {RETENTION_FLOOR_DAYS}-day retention', OLD.id
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM audit_archives a WHERE a.chain = OLD.chain
                   AND OLD.seq BETWEEN a.first_seq AND a.last_seq
                   AND (OLD.occurred_at AT TIME ZONE 'UTC')::date <= a.day) THEN
        RAISE EXCEPTION 'audit record % is not archived', OLD.id USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF EXISTS (SELECT 1 FROM legal_holds h WHERE h.released_at IS NULL
               AND (h.organisation_id IS NULL OR h.organisation_id = OLD.organisation_id)) THEN
        RAISE EXCEPTION 'audit record % is under a legal hold', OLD.id USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN OLD;
END
$$;

-- Chain heads change only from inside the chaining trigger (trigger depth 2), and never go.
CREATE FUNCTION audit_chain_heads_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' OR pg_trigger_depth() < 2 THEN
        RAISE EXCEPTION '% on audit_chain_heads is not allowed: only the audit_events trigger moves heads', TG_OP
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END
$$;

-- A legal hold is never removed, only released once (released_at and released_by set).
CREATE FUNCTION legal_holds_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' OR OLD.released_at IS NOT NULL OR NEW.released_at IS NULL OR NEW.id <> OLD.id
       OR NEW.organisation_id IS DISTINCT FROM OLD.organisation_id OR NEW.reason <> OLD.reason
       OR NEW.placed_at <> OLD.placed_at OR NEW.placed_by IS DISTINCT FROM OLD.placed_by THEN
        RAISE EXCEPTION '% on legal_holds is not allowed: a hold can only be released, once', TG_OP
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END
$$;
"""

TRIGGERS = """
CREATE TRIGGER audit_events_chain BEFORE INSERT ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_chain();
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_reject();
CREATE TRIGGER audit_events_guard_delete BEFORE DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_guard_delete();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_reject();
CREATE TRIGGER audit_chain_heads_guard BEFORE INSERT OR UPDATE OR DELETE ON audit_chain_heads
    FOR EACH ROW EXECUTE FUNCTION audit_chain_heads_guard();
CREATE TRIGGER audit_chain_heads_no_truncate BEFORE TRUNCATE ON audit_chain_heads
    FOR EACH STATEMENT EXECUTE FUNCTION audit_reject();
CREATE TRIGGER audit_archives_no_change BEFORE UPDATE OR DELETE ON audit_archives
    FOR EACH ROW EXECUTE FUNCTION audit_reject();
CREATE TRIGGER audit_archives_no_truncate BEFORE TRUNCATE ON audit_archives
    FOR EACH STATEMENT EXECUTE FUNCTION audit_reject();
CREATE TRIGGER legal_holds_guard BEFORE UPDATE OR DELETE ON legal_holds
    FOR EACH ROW EXECUTE FUNCTION legal_holds_guard();
CREATE TRIGGER legal_holds_no_truncate BEFORE TRUNCATE ON legal_holds
    FOR EACH STATEMENT EXECUTE FUNCTION audit_reject();
"""


def _hash(name: str) -> sa.Column[str]:
    return sa.Column(name, sa.String(length=64), nullable=False)


def upgrade() -> None:
    op.create_table('audit_events',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('chain', sa.BigInteger(), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('occurred_at', sa.DateTime(timezone=True), server_default=sa.text('clock_timestamp()'), nullable=False),
    sa.Column('organisation_id', sa.BigInteger(), nullable=True),
    sa.Column('action', sa.String(length=100), nullable=False),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('actor_type', sa.String(length=16), nullable=False),
    sa.Column('actor_id', sa.String(length=200), nullable=True),
    sa.Column('resource_type', sa.String(length=64), nullable=True),
    sa.Column('resource_id', sa.String(length=200), nullable=True),
    sa.Column('patient_id', sa.String(length=100), nullable=True),
    sa.Column('request_id', sa.String(length=100), nullable=True),
    sa.Column('job_id', sa.BigInteger(), nullable=True),
    sa.Column('source_ip', sa.String(length=64), nullable=True),
    sa.Column('user_agent', sa.String(length=500), nullable=True),
    _hash('prev_hash'),
    _hash('hash'),
    sa.CheckConstraint("outcome IN ('success', 'denied', 'error')", name='ck_audit_events_outcome'),
    sa.CheckConstraint("actor_type IN ('client', 'operator', 'system')", name='ck_audit_events_actor_type'),
    sa.CheckConstraint("hash ~ '^[0-9a-f]{64}$' AND prev_hash ~ '^[0-9a-f]{64}$'", name='ck_audit_events_hashes'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('chain', 'seq', name='uq_audit_events_chain_seq')
    )
    op.create_index('ix_audit_events_org_occurred', 'audit_events', ['organisation_id', 'occurred_at'])
    op.create_index('ix_audit_events_org_id', 'audit_events', ['organisation_id', 'id'])  # the API's pages
    op.create_index('ix_audit_events_org_patient_occurred', 'audit_events',
                    ['organisation_id', 'patient_id', 'occurred_at'])
    op.create_index('ix_audit_events_org_actor', 'audit_events', ['organisation_id', 'actor_id'])
    op.create_table('audit_chain_heads',
    sa.Column('chain', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    _hash('hash'),
    sa.PrimaryKeyConstraint('chain')
    )
    op.create_table('audit_archives',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('chain', sa.BigInteger(), nullable=False),
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('path', sa.String(length=500), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('record_count', sa.Integer(), nullable=False),
    sa.Column('first_seq', sa.BigInteger(), nullable=False),
    sa.Column('last_seq', sa.BigInteger(), nullable=False),
    _hash('head_hash'),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('chain', 'day', name='uq_audit_archives_chain_day')
    )
    op.create_table('legal_holds',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('organisation_id', sa.BigInteger(), nullable=True),
    sa.Column('reason', sa.String(length=500), nullable=False),
    sa.Column('placed_by', sa.String(length=200), nullable=True),
    sa.Column('placed_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('released_by', sa.String(length=200), nullable=True),
    sa.Column('released_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_legal_holds_active', 'legal_holds', ['organisation_id'],
                    postgresql_where=sa.text('released_at IS NULL'))
    op.execute(FUNCTIONS)
    op.execute(TRIGGERS)


def downgrade() -> None:
    op.execute('DROP FUNCTION audit_canonical(audit_events)')  # it depends on the table's row type
    op.drop_table('legal_holds')
    op.drop_table('audit_archives')
    op.drop_table('audit_chain_heads')
    op.drop_table('audit_events')
    for function in ('legal_holds_guard()', 'audit_chain_heads_guard()', 'audit_events_guard_delete()',
                     'audit_reject()', 'audit_events_chain()', 'audit_field(text)'):
        op.execute(f'DROP FUNCTION {function}')
