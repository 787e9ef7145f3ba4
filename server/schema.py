"""The core schema: the migrations of the tables the store itself reads and writes
(sessions, seats, consent, recordings, cues, markers, notes, organisations). Modules
keep their own tables' migrations beside their code (`store.ModuleMigrations`)."""

from __future__ import annotations

from storyroom.database import Script

# Versioned migrations: index + 1 is the schema version. Never edit a shipped one.
MIGRATIONS: tuple[Script, ...] = (
    """
    CREATE TABLE sessions (
        id TEXT PRIMARY KEY,
        title TEXT NOT NULL,
        language TEXT NOT NULL,
        target_minutes INTEGER NOT NULL,
        questions TEXT NOT NULL,        -- JSON list of {"id", "theme", "text": {lang: text}}
        agreed TEXT NOT NULL DEFAULT '[]',  -- JSON ordered list of question ids
        created_at REAL NOT NULL
    );
    CREATE TABLE seats (
        session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
        seat TEXT NOT NULL,
        name TEXT NOT NULL,
        bio TEXT NOT NULL DEFAULT '',
        token_hash TEXT NOT NULL UNIQUE,
        token_expires_at REAL NOT NULL,
        PRIMARY KEY (session_id, seat)
    );
    -- every consent change is a new row; the latest per seat is the current one
    CREATE TABLE consent_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
        seat TEXT NOT NULL,
        record INTEGER NOT NULL,
        archive INTEGER NOT NULL,
        public INTEGER NOT NULL,
        at REAL NOT NULL,
        source TEXT NOT NULL DEFAULT 'room'
    );
    CREATE TABLE question_choices (
        session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
        seat TEXT NOT NULL,
        question_ids TEXT NOT NULL,
        at REAL NOT NULL,
        PRIMARY KEY (session_id, seat)
    );
    CREATE TABLE recordings (
        id TEXT PRIMARY KEY,
        session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
        take INTEGER NOT NULL,
        status TEXT NOT NULL,           -- recording | paused | stopped | interrupted | ...
        started_at REAL NOT NULL,
        stopped_at REAL,
        elapsed_before REAL NOT NULL DEFAULT 0,  -- recorded seconds before the current run
        run_started_at REAL,            -- wall time the current run began; NULL unless recording
        status_reason TEXT,
        UNIQUE (session_id, take)
    );
    CREATE TABLE recording_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        recording_id TEXT NOT NULL REFERENCES recordings(id) ON DELETE CASCADE,
        kind TEXT NOT NULL,             -- start | pause | resume | stop | interrupted
        at REAL NOT NULL,
        rec_time REAL NOT NULL
    );
    CREATE TABLE cues (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
        recording_id TEXT REFERENCES recordings(id) ON DELETE CASCADE,
        question_id TEXT NOT NULL,
        at REAL NOT NULL,
        rec_time REAL
    );
    CREATE TABLE markers (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
        recording_id TEXT REFERENCES recordings(id) ON DELETE CASCADE,
        seat TEXT NOT NULL,
        label TEXT NOT NULL,
        at REAL NOT NULL,
        rec_time REAL
    );
    CREATE INDEX consent_by_session ON consent_events(session_id, seat, id);
    CREATE INDEX cues_by_session ON cues(session_id, id);
    CREATE INDEX markers_by_session ON markers(session_id, id);
    CREATE INDEX recordings_by_session ON recordings(session_id, take);
    """,
    # 2: finalization of stopped and interrupted recordings
    """
    ALTER TABLE recordings ADD COLUMN finalize_status TEXT;  -- NULL | queued | finalizing | ready | failed
    ALTER TABLE recordings ADD COLUMN finalize_percent REAL NOT NULL DEFAULT 0;
    ALTER TABLE recordings ADD COLUMN finalize_reason TEXT;
    ALTER TABLE recordings ADD COLUMN finalized TEXT;        -- JSON: files, chapters, loudness, damage
    ALTER TABLE recordings ADD COLUMN finalized_at REAL;
    """,
    # 3: modules (applications, staff accounts...) version their own tables here
    """
    CREATE TABLE module_versions (module TEXT PRIMARY KEY, version INTEGER NOT NULL);
    """,
    # 4: the facilitator's private notes, with times
    """
    CREATE TABLE notes (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
        recording_id TEXT REFERENCES recordings(id) ON DELETE SET NULL,
        seat TEXT NOT NULL,
        text TEXT NOT NULL,
        at REAL NOT NULL,
        rec_time REAL
    );
    CREATE INDEX notes_by_session ON notes(session_id, id);
    """,
    # 5: a session's scheduled start (seat links expire after it), the finalization stage
    """
    ALTER TABLE sessions ADD COLUMN starts_at REAL;
    ALTER TABLE recordings ADD COLUMN finalize_stage TEXT;
    """,
    # 6: how a session is run (seats.SessionKind): every existing session had a facilitator
    """
    ALTER TABLE sessions ADD COLUMN kind TEXT NOT NULL DEFAULT 'facilitated';
    """,
    # 7: organisations; every session (and through it its recordings, copies and exports)
    # belongs to one, and what existed before belongs to the default one (id 1), whose
    # empty name shows nothing new to a single-team install
    """
    CREATE TABLE organisations (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        slug TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL,
        logo_url TEXT,
        contact TEXT,
        settings TEXT NOT NULL DEFAULT '{}',  -- JSON
        created_at REAL NOT NULL
    );
    -- the first row of a new table: id 1 on both engines (no explicit id, so PostgreSQL's
    -- identity sequence stays in step)
    INSERT INTO organisations (slug, name, created_at) VALUES ('default', '', 0);
    ALTER TABLE sessions ADD COLUMN org_id INTEGER NOT NULL DEFAULT 1;
    CREATE INDEX sessions_by_org ON sessions(org_id, created_at);
    """,
)
