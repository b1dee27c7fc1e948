"""`ResultStore`: one SQLite file per study (`DIR/study.db`) with everything a search measured.

The file holds Optuna's own tables (so `optuna-dashboard sqlite:///DIR/study.db` shows the search, and the
sampler resumes from it) and the toolkit's, prefixed `nas_`:

- `nas_trials`: one row per trial (Ray Tune's trial id): its Optuna number, the arch (JSON, `arch_id`, name,
  family), the analytic cost, the zero-cost and supernet scores the study took (`nas.metrics.ZERO_COST`,
  `nas.metrics.SUPERNET_SCORE`), the status (`nas.status`: `pending`, `running`, then one of its final statuses,
  with the error), host, Ray node, device, attempts, micro-batch accumulation, wall time.
- `nas_rungs`: one row per trial and rung (the index of the budget in the study's ladder): the budget (samples
  seen the rung stands for), every metric the trainer reported there (JSON), the checkpoint (a directory holding
  that rung's `checkpoint.pt`, relative to the run directory: `store.checkpoint_path(row["checkpoint"])`), the
  host, node and training session that measured it.
- `nas_meta`: the resolved study (`store.study()` reads it back as a `nas.study.Study`) and the driver's record
  (`nas.heartbeat`: whether a search is running, stopped or was killed).

Rows are keyed (trial, rung), so a resumed search that reports a rung again updates it instead of adding a
duplicate. Only the search driver writes; readers (`vitamin-nas status` from another shell, the scaling
and selection code) open the file read-only while it runs (WAL mode).

Reading, for the scaling, selection and plotting code:

    store = ResultStore.open("runs/quickstart", readonly=True)
    store.study()                                  # the nas.study.Study that was run
    store.budgets()                                # [1500, 4500, 13500]
    df = store.frame(budget=13500, family="C-C-T/geglu")   # one row per trial and rung: cost, metrics, arch
    store.at_budget(13500)                         # one row per arch measured at that budget
    store.pareto_front({"zeroshot_top1": "max", "image_gmacs": "min"}, budget=13500)
    store.leaderboard()                            # every trial at the furthest budget it reached
    Arch.from_json(df.arch[0])                     # the candidate itself
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import weakref
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas import status
from nas.arch import Arch
from nas.cost import COST_METRICS
from nas.errors import ConfigError
from nas.metrics import SUPERNET_SCORE, ZERO_COST
from nas.pareto import minimization, pareto_mask

if TYPE_CHECKING:
    import optuna
    import pandas as pd

    from nas.study import Study

FILENAME = "study.db"
SCHEMA_VERSION = 2

_TABLES = """
CREATE TABLE IF NOT EXISTS nas_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS nas_trials (
    trial_id TEXT PRIMARY KEY, number INTEGER, arch_id TEXT NOT NULL, arch_name TEXT NOT NULL,
    family TEXT NOT NULL, arch TEXT NOT NULL,
    image_gmacs REAL, image_gmacs_full REAL, image_params_m REAL, gmacs REAL, gmacs_full REAL, params_m REAL,
    train_gflops REAL, naswot REAL, synflow REAL, supernet_top1 REAL, supernet_top1_low REAL,
    supernet_top1_high REAL, supernet_top1_n INTEGER,
    schedule INTEGER, seed INTEGER, status TEXT NOT NULL, error TEXT, rung INTEGER, budget INTEGER,
    samples_seen INTEGER,
    host TEXT, node TEXT, device TEXT, pid INTEGER, accum_freq INTEGER, attempts INTEGER NOT NULL DEFAULT 0,
    resumed_from INTEGER, wall_s REAL, created_at REAL NOT NULL, started_at REAL, updated_at REAL, ended_at REAL
);
CREATE INDEX IF NOT EXISTS nas_trials_arch ON nas_trials (arch_id);
CREATE TABLE IF NOT EXISTS nas_rungs (
    trial_id TEXT NOT NULL REFERENCES nas_trials (trial_id), rung INTEGER NOT NULL, budget INTEGER NOT NULL,
    samples_seen INTEGER NOT NULL, metrics TEXT NOT NULL, hits TEXT, checkpoint TEXT, host TEXT, node TEXT,
    device TEXT, session TEXT, reported_at REAL NOT NULL,
    PRIMARY KEY (trial_id, rung)
);
CREATE INDEX IF NOT EXISTS nas_rungs_budget ON nas_rungs (budget);
"""
_TRIAL_COLUMNS = ("trial_id", "number", "arch_id", "arch_name", "family", "arch", *COST_METRICS, *ZERO_COST,
                  *SUPERNET_SCORE, "schedule", "seed", "status", "error",
                  "rung", "budget", "samples_seen", "host", "node", "device", "pid", "accum_freq", "attempts",
                  "resumed_from", "wall_s", "created_at", "started_at", "updated_at", "ended_at")
#: Columns added to `nas_trials` after databases were written, with their types: added when one is opened to write.
LATER_COLUMNS = {"seed": "INTEGER", **{name: "INTEGER" if name.endswith("_n") else "REAL" for name in SUPERNET_SCORE}}
#: Trial fields a search may update as a trial runs (what `update_trial` accepts).
TRIAL_FIELDS = ("number", "status", "error", "rung", "budget", "samples_seen", "host", "node", "device", "pid",
                "accum_freq", "resumed_from", "wall_s", "started_at", "ended_at")


def _optuna_storage(url: str) -> optuna.storages.RDBStorage:
    import optuna

    return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})


#: The first bytes of every SQLite 3 database file.
SQLITE_HEADER = b"SQLite format 3\x00"
#: What to do about a damaged results database (the toolkit never repairs one).
RECOVERY = "restore study.db from a copy, or start the search again with another --out"
#: Tables a results database has from its creation: the toolkit's and the core of Optuna's. A missing one means
#: the file was damaged; creating it again, empty, would hide that and lose what it held.
REQUIRED_TABLES = ("nas_meta", "nas_trials", "nas_rungs", "studies", "study_directions", "trials", "trial_params",
                   "trial_values", "version_info")


#: The stores open in this process (see `_held`).
_open_here: weakref.WeakSet[ResultStore] = weakref.WeakSet()


def _held(path: Path) -> bool:
    """Whether this process holds the database at `path` open through SQLite. Closing any plain descriptor of the
    file would then drop every POSIX lock the process holds on it (SQLite's "How To Corrupt An SQLite Database
    File", 2.2): another process's last connection would take its exclusive lock, checkpoint the WAL and delete it
    under the live connections, which then fail with "disk I/O error" and lose what the WAL held."""
    return any(store.path == path for store in list(_open_here))


def check_database(path: str | os.PathLike) -> None:
    """A `ConfigError` saying how to recover when the file at `path` is not a whole results database.

    Read-only, and before anything else opens the file: neither SQLite (`CREATE TABLE IF NOT EXISTS`) nor
    Optuna (which creates missing tables) may write into a damaged file, which is evidence and may be
    restored from a copy. A file this process holds open already was checked when it was first opened: only
    SQLite reads it again (see `_held`).
    """
    problem = _damage(Path(path).resolve())
    if problem:
        raise ConfigError(f"damaged results database: {problem}. It was left as it is: {RECOVERY}", source=str(path))


def _damage(path: Path) -> str | None:
    """What is wrong with the file, or None. Cheap header checks first (never on a file this process holds open:
    `_held`), then SQLite's own quick check."""
    size = path.stat().st_size
    if size == 0:
        return "the file is empty (0 bytes)"
    return (None if _held(path) else _header_damage(path, size)) or _sqlite_damage(path)


def _header_damage(path: Path, size: int) -> str | None:
    with open(path, "rb") as file:
        header = file.read(100)
    if not header.startswith(SQLITE_HEADER):
        return "not an SQLite database (its first bytes are not SQLite's header)"
    if len(header) < 100:
        return f"cut short ({size} bytes, less than SQLite's 100-byte header)"
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    if pages and header[24:28] == header[92:96] and size < pages * page_size:  # the header's page count is valid
        return f"cut short ({size:,} of {pages * page_size:,} bytes)"
    return None


def _sqlite_damage(path: Path) -> str | None:
    # Without a WAL beside it no connection is writing, and `immutable` keeps SQLite from making one (and its
    # shared-memory file); with one, a search may be writing, and SQLite must see its pages and locks.
    immutable = "" if Path(f"{path}-wal").exists() else "&immutable=1"
    try:
        connection = sqlite3.connect(f"file:{path}?mode=ro{immutable}", uri=True, timeout=60)
        try:
            verdict = connection.execute("PRAGMA quick_check").fetchall()
            tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            connection.close()
    except sqlite3.OperationalError as err:
        if "locked" in str(err) or "busy" in str(err):
            raise  # a writer holding it for over a minute: busy, not damaged
        return f"SQLite cannot read it ({err})"
    except sqlite3.DatabaseError as err:
        return f"SQLite cannot read it ({err})"
    if verdict != [("ok",)]:
        found = " ".join(" ".join(str(row[0]) for row in verdict[:3]).split())
        return f"SQLite's integrity check fails ({found})"
    missing = [name for name in REQUIRED_TABLES if name not in tables]
    if missing:
        return f"table(s) {', '.join(missing)} missing"
    return None


@dataclass(frozen=True)
class Measured:
    """How far an arch has been measured: the furthest trial's rungs (budget order) and its status."""

    trial_id: str
    status: str
    rungs: list[dict[str, Any]]

    @property
    def budget(self) -> int:
        return self.rungs[-1]["budget"] if self.rungs else 0


class ResultStore:
    """The results database of one study. `ResultStore.create(dir, ...)` makes it; `open` reads it."""

    def __init__(self, path: str | os.PathLike, readonly: bool = False):
        self.path = Path(path).resolve()
        self.readonly = readonly
        if not self.path.is_file():
            raise ConfigError("no results database here (run `vitamin-nas search` first)", source=str(self.path))
        check_database(self.path)  # before a connection that could write: a damaged file is never altered
        uri = f"file:{self.path}?mode=ro" if readonly else f"file:{self.path}"
        self.db = sqlite3.connect(uri, uri=True, timeout=60, isolation_level=None, check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        _open_here.add(self)
        self._study: Study | None = None
        if not readonly:
            self.db.executescript(_TABLES)
            columns = {row[1] for row in self.db.execute("PRAGMA table_info(nas_trials)")}
            for name, kind in LATER_COLUMNS.items():  # a database written before repeats (seed: every trial ran
                if name not in columns:              # with train.seed) or before proxies (no trial was scored)
                    self.db.execute(f"ALTER TABLE nas_trials ADD COLUMN {name} {kind}")
            self.db.execute("CREATE INDEX IF NOT EXISTS nas_trials_status ON nas_trials (status, seed)")  # seed: above
        version = self.meta("schema_version")
        if version not in (None, SCHEMA_VERSION):
            raise ConfigError(f"schema version {version}, this toolkit reads {SCHEMA_VERSION}", source=str(self.path))

    @classmethod
    def open(cls, where: str | os.PathLike, readonly: bool = False) -> ResultStore:
        """A study directory or the database file itself."""
        where = Path(where)
        return cls(where / FILENAME if where.is_dir() else where, readonly=readonly)

    @classmethod
    def create(cls, directory: str | os.PathLike, study: Study) -> ResultStore:
        """A new database of `study` in `directory`, with Optuna's tables and the toolkit's.

        It is built aside and renamed into place, so that a reader never finds it half made.
        """
        path = Path(directory) / FILENAME
        path.parent.mkdir(parents=True, exist_ok=True)
        building = path.with_name(f".{FILENAME}.new")
        building.unlink(missing_ok=True)
        connection = sqlite3.connect(building)
        connection.execute("PRAGMA journal_mode=WAL")  # readers never block the writer; persists in the file
        connection.executescript(_TABLES)
        connection.close()
        # Optuna's tables from the start: optuna-dashboard opens it at once, and an open checks that they are there
        _optuna_storage(f"sqlite:///{building}").engine.dispose()
        store = cls(building)
        for key, value in {"schema_version": SCHEMA_VERSION, "created_at": time.time(),
                           "study": study.resolved()}.items():
            store.set_meta(key, value)
        store.close()
        os.replace(building, path)
        return cls(path)

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "readonly": self.readonly}

    def study(self) -> Study:
        """The study this database holds the results of, as it was run (read once per store)."""
        if self._study is None:
            from nas.study import study_from_dict

            resolved = self.meta("study")
            if resolved is None:
                raise ConfigError("holds no study (not a search's results database)", source=str(self.path))
            self._study = study_from_dict(resolved, source=str(self.path))
        return self._study

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"], state["readonly"])

    def close(self) -> None:
        _open_here.discard(self)
        self.db.close()

    @property
    def url(self) -> str:
        """The SQLAlchemy URL of this file: Optuna's storage and `optuna-dashboard` take it."""
        return f"sqlite:///{self.path}"

    def optuna_storage(self) -> optuna.storages.RDBStorage:
        return _optuna_storage(self.url)

    # ---- meta --------------------------------------------------------------------------------------------
    def set_meta(self, key: str, value: Any) -> None:
        self.db.execute("INSERT INTO nas_meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                        (key, json.dumps(value)))

    def meta(self, key: str, default: Any = None) -> Any:
        try:
            row = self.db.execute("SELECT value FROM nas_meta WHERE key = ?", (key,)).fetchone()
        except sqlite3.OperationalError:  # a read-only open of a file whose tables are not written yet
            return default
        try:
            return json.loads(row[0]) if row else default
        except (json.JSONDecodeError, TypeError) as err:  # bytes changed inside a record: no page check sees it
            raise ConfigError(f"damaged results database: nas_meta {key!r} is not JSON ({err}); {RECOVERY}",
                              source=str(self.path)) from None

    @property
    def objectives(self) -> dict[str, str]:
        return self.study().objectives

    # ---- writing (the search driver) ---------------------------------------------------------------------
    def add_trial(self, trial_id: str, arch: Arch, cost: Mapping[str, float], **fields: Any) -> None:
        """Register a trial with its analytic cost (`Cost.metrics()`, and the zero-cost and supernet scores the study
        took), idempotently: a trial already there keeps its row."""
        values = {"trial_id": trial_id, "arch_id": arch.arch_id, "arch_name": arch.name(),
                  "family": arch.family, "arch": arch.to_json(), **{k: cost[k] for k in COST_METRICS},
                  **{k: cost[k] for k in (*ZERO_COST, *SUPERNET_SCORE) if k in cost},
                  "status": status.PENDING, "created_at": time.time(), **fields}
        names = ", ".join(values)
        self.db.execute(f"INSERT INTO nas_trials ({names}) VALUES ({', '.join('?' * len(values))}) "
                        "ON CONFLICT (trial_id) DO NOTHING", tuple(values.values()))

    def update_trial(self, trial_id: str, **fields: Any) -> None:
        unknown = set(fields) - set(TRIAL_FIELDS)
        if unknown:
            raise ValueError(f"not trial fields: {sorted(unknown)}")
        if "status" in fields and fields["status"] not in status.ALL:
            raise ValueError(f"status {fields['status']!r} is not one of {status.ALL}")
        fields["updated_at"] = time.time()
        assignments = ", ".join(f"{name} = ?" for name in fields)
        self.db.execute(f"UPDATE nas_trials SET {assignments} WHERE trial_id = ?", (*fields.values(), trial_id))

    def start_attempt(self, trial_id: str) -> None:
        """A trial (re)starts on a worker: one more attempt, running again."""
        now = time.time()
        self.db.execute("UPDATE nas_trials SET attempts = attempts + 1, status = ?, ended_at = NULL, "
                        "started_at = COALESCE(started_at, ?), updated_at = ? WHERE trial_id = ?",
                        (status.RUNNING, now, now, trial_id))

    def record_rung(self, trial_id: str, metrics: Mapping[str, Any], *, rung: int, hits: str | None = None,
                    checkpoint: str | None = None, session: str | None = None, replace: bool = True,
                    **fields: Any) -> None:
        """One rung's metrics (the trainer's flat dict, with the rung's `budget`) and the evaluation's per-item
        hits (JSON of `nas.uncertainty.pack_hits` text by metric). A rung reported again replaces the row,
        unless `replace` is False (a replay of a known result): then the first measurement stands. The trial's
        row takes the rung's progress and `fields` (as `update_trial`), in the same transaction (one commit per
        result)."""
        numeric = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        on_conflict = ("DO UPDATE SET budget = excluded.budget, samples_seen = excluded.samples_seen, "
                       "metrics = excluded.metrics, hits = excluded.hits, checkpoint = excluded.checkpoint, "
                       "host = excluded.host, "
                       "node = excluded.node, device = excluded.device, session = excluded.session, "
                       "reported_at = excluded.reported_at" if replace else "DO NOTHING")
        where = {k: metrics.get(k) for k in ("host", "node", "device")}
        budget = int(metrics["budget"])
        with self.db:  # one transaction: BEGIN here, COMMIT (or ROLLBACK) at its end
            self.db.execute("BEGIN")
            self.db.execute(
                f"INSERT INTO nas_rungs VALUES ({', '.join('?' * 12)}) ON CONFLICT (trial_id, rung) {on_conflict}",
                (trial_id, rung, budget, int(metrics["samples_seen"]), json.dumps(numeric), hits,
                 checkpoint, *where.values(), session, time.time()))
            self.update_trial(trial_id, rung=rung, budget=budget, samples_seen=int(metrics["samples_seen"]),
                              wall_s=metrics.get("wall_s"), **where, **fields)

    def forget_checkpoint(self, trial_id: str, rung: int) -> None:
        """A rung's checkpoint was deleted (`storage.keep`: nas.search.retention): the rung keeps none."""
        self.db.execute("UPDATE nas_rungs SET checkpoint = NULL WHERE trial_id = ? AND rung = ?", (trial_id, rung))

    def checkpoint_path(self, checkpoint: str) -> Path:
        """A rung's `checkpoint` (as stored, relative to the run directory) as an absolute path: the directory
        holding that rung's `checkpoint.pt`, wherever the run directory now is."""
        from nas.run_dir import RunDir

        return RunDir(self.path.parent).resolve(checkpoint)

    # ---- reading -----------------------------------------------------------------------------------------
    def trial(self, trial_id: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT * FROM nas_trials WHERE trial_id = ?", (trial_id,)).fetchone()
        return dict(row) if row else None

    def trials(self, status: str | Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Trial rows in the order trials were created, optionally only those with a status."""
        statuses = [status] if isinstance(status, str) else status
        query, args = "SELECT * FROM nas_trials", ()
        if statuses:
            query += f" WHERE status IN ({', '.join('?' * len(statuses))})"
            args = tuple(statuses)
        return [dict(r) for r in self.db.execute(query + " ORDER BY created_at, trial_id", args)]

    def rungs(self, trial_id: str | None = None, latest: bool = False) -> list[dict[str, Any]]:
        """Rung rows (metrics decoded; `hits` as recorded, JSON text or None), by trial then rung; with `latest`,
        each trial's furthest rung only (the progress table's: no other row's metrics decoded)."""
        query, args = "SELECT * FROM nas_rungs", ()
        if latest:
            query += " WHERE (trial_id, rung) IN (SELECT trial_id, MAX(rung) FROM nas_rungs GROUP BY trial_id)"
        if trial_id is not None:
            query, args = query + (" AND" if latest else " WHERE") + " trial_id = ?", (trial_id,)
        rows = []
        for row in self.db.execute(query + " ORDER BY trial_id, rung", args):
            row = dict(row)
            row["metrics"] = json.loads(row["metrics"])
            rows.append(row)
        return rows

    def measured(self, arch_id: str, schedule: int, seed: int | None = None) -> Measured | None:
        """The furthest measurement of an arch in runs whose schedule ends at `schedule` samples with `seed`
        (None: the study's own) (the trial that reached the largest budget, first such trial)."""
        best = self.db.execute(
            "SELECT t.trial_id, t.status FROM nas_trials t JOIN nas_rungs r USING (trial_id) WHERE t.arch_id = ? "
            "AND t.schedule = ? AND t.seed IS ? GROUP BY t.trial_id ORDER BY MAX(r.budget) DESC, t.status = ? DESC, "
            "t.created_at LIMIT 1", (arch_id, schedule, seed, status.COMPLETED)).fetchone()
        if best is None:
            return None
        return Measured(best["trial_id"], best["status"], self.rungs(best["trial_id"]))

    def count(self, statuses: Sequence[str], among: Collection[str] | None = None) -> int:
        """How many trials of the study's own seed (`seed` None) have one of `statuses`, of those in `among` when
        given: counted in SQLite's index (`nas_trials_status`), no row read into Python."""
        query = f"SELECT COUNT(*) FROM nas_trials WHERE status IN ({', '.join('?' * len(statuses))}) AND seed IS NULL"
        args = tuple(statuses)
        if among is not None:
            query += f" AND trial_id IN ({', '.join('?' * len(among))})"
            args += tuple(among)
        return self.db.execute(query, args).fetchone()[0]

    def arch_ids(self, statuses: Sequence[str]) -> set[str]:
        """The archs of the trials with one of `statuses`."""
        query = f"SELECT DISTINCT arch_id FROM nas_trials WHERE status IN ({', '.join('?' * len(statuses))})"
        return {r[0] for r in self.db.execute(query, tuple(statuses))}

    def budgets(self) -> list[int]:
        """The budgets (samples seen) at which anything was measured, ascending."""
        return [r[0] for r in self.db.execute("SELECT DISTINCT budget FROM nas_rungs ORDER BY budget")]

    def frame(self, budget: int | None = None, family: str | None = None,
              status: str | Sequence[str] | None = None) -> pd.DataFrame:
        """One row per trial and rung: trial columns (arch, cost, status, ...), `budget`, and every metric."""
        import pandas as pd

        trials = {t["trial_id"]: t for t in self.trials(status)}
        records = []
        for rung in self.rungs():
            trial = trials.get(rung["trial_id"])
            if trial is None or (budget is not None and rung["budget"] != budget) or \
                    (family is not None and trial["family"] != family):
                continue
            metrics = {k: v for k, v in rung["metrics"].items() if k not in ("budget", "samples_seen")}
            records.append({**trial, "rung": rung["rung"], "budget": rung["budget"],
                            "samples_seen": rung["samples_seen"], "host": rung["host"], "node": rung["node"],
                            "device": rung["device"], "checkpoint": rung["checkpoint"], "hits": rung["hits"],
                            **metrics})
        columns = [*_TRIAL_COLUMNS] + sorted({k for r in records for k in r} - set(_TRIAL_COLUMNS))
        frame = pd.DataFrame.from_records(records, columns=columns)
        return frame.sort_values(["budget", "created_at", "trial_id"], kind="stable").reset_index(drop=True)

    def at_budget(self, budget: int) -> pd.DataFrame:
        """One row per arch measured at `budget` (an arch measured twice keeps its first trial), of the trials whose
        rungs are measurements (`nas.status.MEASURED`)."""
        frame = self.frame(budget=budget, status=status.MEASURED)
        return frame.drop_duplicates("arch_id", keep="first").reset_index(drop=True)

    def pareto_front(self, objectives: Mapping[str, str] | None = None, budget: int | None = None) -> pd.DataFrame:
        """The non-dominated archs at each budget (or one): only results measured at that very budget compete,
        so an early-stopped trial's low-budget accuracy is never set against a full-budget one."""
        import pandas as pd

        objectives = dict(objectives or self.objectives)
        fronts = []
        for b in [budget] if budget is not None else self.budgets():
            frame = self.at_budget(b).dropna(subset=list(objectives))
            if frame.empty:
                continue
            mask = pareto_mask(minimization(frame, objectives))
            fronts.append(frame[mask].sort_values(list(objectives)[0], ascending=objectives[list(objectives)[0]]
                                                  == "min"))
        if not fronts:
            return self.frame().iloc[0:0]
        return pd.concat(fronts, ignore_index=True)

    def leaderboard(self, objectives: Mapping[str, str] | None = None, budget: int | None = None) -> pd.DataFrame:
        """Every trial at the furthest budget it reached (or at `budget`), best first: larger budgets first,
        then by the first objective; the trials whose rungs are measurements (`nas.status.MEASURED`)."""
        objectives = dict(objectives or self.objectives)
        frame = self.frame(budget=budget, status=status.MEASURED)
        if frame.empty:
            return frame
        frame = frame.sort_values("budget").drop_duplicates("trial_id", keep="last")
        first = next(iter(objectives))
        return frame.sort_values(["budget", first], ascending=[False, objectives[first] == "min"],
                                 na_position="last").reset_index(drop=True)

    def export(self, path: str | os.PathLike, budget: int | None = None) -> Path:
        """Write `frame(budget)` as CSV or parquet (by the suffix), with the study's `label` of each candidate
        where it names them (the report's tables go by label)."""
        path = Path(path)
        frame = self.frame(budget=budget)
        labels = self.study().label_of
        if labels:
            frame.insert(frame.columns.get_loc("arch_name"), "label", frame.arch_id.map(labels))
        if path.suffix == ".csv":
            frame.to_csv(path, index=False)
        elif path.suffix == ".parquet":
            frame.to_parquet(path, index=False)
        else:
            raise ConfigError("export to a .csv or .parquet file", source=str(path))
        return path


def rung_checkpoint(store: ResultStore, trial_id: str, rung: int) -> str | None:
    """The directory holding the checkpoint of a trial's rung (`checkpoint.pt`), wherever the run directory now
    is; None when none was kept."""
    row = store.db.execute("SELECT checkpoint FROM nas_rungs WHERE trial_id = ? AND rung = ?",
                           (trial_id, rung)).fetchone()
    return str(store.checkpoint_path(row[0])) if row and row[0] else None
