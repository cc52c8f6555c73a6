"""Statements for the hot paths (an issuance, an audit event): compiled once, several writes a round trip.

Compiling a queryset costs more than running it on a warm connection (about 1 ms against 0.3 ms for the
subscriber lock of an issuance), so the hot paths keep their SQL: ``Prepared`` reads, ``insert`` and
``update_row`` writes are compiled once per connection and shape, and their values are prepared by the
fields as ``save()`` prepares them (encryption, JSON, time zones). ``execute`` sends several writes at once:
on PostgreSQL as one statement whose side writes are data-modifying ``WITH`` clauses, elsewhere one after
the other. Either way the side writes run before the main statement can see them, so they must not depend
on its rows (PostgreSQL runs them all on one snapshot: a side ``UPDATE`` never sees the main ``INSERT``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from django.db import DEFAULT_DB_ALIAS, connections, models
from django.db.models.sql import InsertQuery, UpdateQuery
from django.db.transaction import TransactionManagementError


@dataclass(frozen=True)
class Statement:
    sql: str
    params: tuple[Any, ...]


def _db():
    """The default database's connection of this thread (not the ``connection`` proxy, which looks it up
    on every attribute: thousands of times a batch)."""
    return connections[DEFAULT_DB_ALIAS]


def _cache() -> dict[Any, Any]:
    """Compiled statements of this connection (per thread and alias, as Django's connections are)."""
    return _db().__dict__.setdefault("_certmgr_sql", {})


# Field types whose database value on PostgreSQL is the Python value itself when it has the exact type
# listed (what their get_db_prep_save answers then); every other field, or value, goes through the field.
_PLAIN: dict[type[models.Field], tuple[type, ...]] = {
    models.CharField: (str,),
    models.TextField: (str,),
    models.IntegerField: (int,),
    models.BigIntegerField: (int,),
    models.SmallIntegerField: (int,),
    models.PositiveIntegerField: (int,),
    models.PositiveSmallIntegerField: (int,),
    models.BigAutoField: (int,),
    models.AutoField: (int,),
    models.BooleanField: (bool,),
}


def _insert_values(fields: Sequence[models.Field], db) -> Callable[[models.Model], list[Any]]:
    """A function answering the database values of a new row's ``fields``, as ``save()`` prepares them
    (``pre_save`` then ``get_db_prep_save``), with the field calls skipped where they change nothing: most of
    the cost of a batch's rows is those calls otherwise."""
    cache = _cache()
    key = ("values", tuple(fields))
    made = cache.get(key)
    if made is not None:
        return made
    plans = []
    for f in fields:
        target = f.target_field if isinstance(f, models.ForeignKey) else f
        plain = _PLAIN.get(type(target), ()) if db.vendor == "postgresql" else ()
        if (
            isinstance(f, models.DateTimeField)
            and type(f) is models.DateTimeField
            and db.vendor == "postgresql"
        ):
            kind = "auto" if (f.auto_now or f.auto_now_add) else "datetime"
        else:
            kind = "plain" if plain else "field"
        plans.append((f, f.attname, kind, plain))

    def values(row: models.Model) -> list[Any]:
        out = []
        for f, attname, kind, plain in plans:
            value = f.pre_save(row, True) if kind == "auto" else getattr(row, attname)
            if kind == "field":
                out.append(f.get_db_prep_save(f.pre_save(row, True), db))
            elif value is None or (type(value) in plain if kind == "plain" else _aware(value)):
                out.append(value)
            else:
                out.append(f.get_db_prep_save(value, db))
        return out

    cache[key] = values
    return values


def _aware(value: Any) -> bool:
    return isinstance(value, datetime) and value.tzinfo is not None


def insert(row: models.Model) -> Statement:
    """``INSERT`` of one unsaved row, ``RETURNING`` its primary key."""
    db = _db()
    model = type(row)
    opts = model._meta
    fields = [f for f in opts.concrete_fields if not (f.primary_key and getattr(row, f.attname) is None)]
    row._prepare_related_fields_for_save(operation_name="insert")  # type: ignore[attr-defined]
    key = ("insert", model, tuple(f.attname for f in fields))
    text = _cache().get(key)
    if text is None:
        query = InsertQuery(model)
        query.insert_values(fields, [row])
        compiler = query.get_compiler(connection=db)
        compiler.returning_fields = [opts.pk]
        [(text, params)] = compiler.as_sql()
        _cache()[key] = text
        return Statement(text, tuple(params))
    return Statement(text, tuple(_insert_values(fields, db)(row)))


def update_row(row: models.Model, fields: Sequence[str]) -> Statement:
    """``UPDATE`` of ``fields`` of one saved row (what ``row.save(update_fields=fields)`` writes)."""
    db = _db()
    model = type(row)
    opts = model._meta
    concrete = [cast(models.Field, opts.get_field(name)) for name in fields]
    key = ("update", model, tuple(fields))
    text = _cache().get(key)
    if text is None:
        qn = db.ops.quote_name
        assignments = ", ".join(f"{qn(f.column)} = %s" for f in concrete)
        text = f"UPDATE {qn(opts.db_table)} SET {assignments} WHERE {qn(opts.pk.column)} = %s"  # noqa: S608
        _cache()[key] = text
    params = tuple(f.get_db_prep_save(getattr(row, f.attname), db) for f in concrete)
    return Statement(text, (*params, row.pk))


def update(queryset: models.QuerySet, **values: Any) -> Statement:
    """``UPDATE`` of the rows of ``queryset`` (the SQL ``queryset.update(**values)`` would send)."""
    db = _db()
    query = cast(UpdateQuery, queryset.query.chain(UpdateQuery))
    query.add_update_values(values)
    text, params = query.get_compiler(connection=db).as_sql()
    return Statement(text, tuple(params))


class PreparedUpdate:
    """An ``UPDATE`` whose SQL never changes but for one value of its filter: ``PreparedUpdate(lambda v:
    Model.objects.filter(parent_id=v), flag=None)``, then ``statement(parent_id)``. Compiled once per
    connection; the values set are fixed."""

    def __init__(self, build: Callable[[Any], models.QuerySet], **values: Any) -> None:
        self.build, self.values = build, values

    def __call__(self, value: Any) -> Statement:
        entry = _cache().get(self)
        if entry is None:
            compiled = update(self.build(Prepared.MARKER), **self.values)
            found = [i for i, p in enumerate(compiled.params) if type(p) is int and p == Prepared.MARKER]
            if len(found) != 1:
                raise ValueError("a prepared update takes its value exactly once")
            entry = _cache()[self] = (compiled, found[0])
        compiled, at = entry
        return Statement(compiled.sql, (*compiled.params[:at], value, *compiled.params[at + 1 :]))


def execute(main: Statement, *before: Statement, also: Statement | None = None) -> list[tuple[Any, ...]]:
    """Run ``before``, then ``also`` (a statement answering at most one row), then ``main``: one round trip
    on PostgreSQL. Answers ``main``'s rows, each followed by ``also``'s columns (``None`` without its row)."""
    db = _db()
    with db.cursor() as cursor:
        if db.vendor == "postgresql" and (before or also):
            clauses = [f"side{i} AS ({s.sql})" for i, s in enumerate(before)]
            params = [p for s in before for p in s.params]
            if also is None:
                cursor.execute(f"WITH {', '.join(clauses)} {main.sql}", (*params, *main.params))
            else:
                clauses += [f"also AS ({also.sql})", f"main AS ({main.sql})"]
                final = "SELECT main.*, also.* FROM main LEFT JOIN also ON TRUE"
                cursor.execute(f"WITH {', '.join(clauses)} {final}", (*params, *also.params, *main.params))
            return cursor.fetchall() if cursor.description else []
        for statement in before:
            cursor.execute(statement.sql, statement.params)
        extra: tuple[Any, ...] = ()
        if also is not None:
            cursor.execute(also.sql, also.params)
            width = len(cursor.description)
            extra = cursor.fetchone() or (None,) * width
        cursor.execute(main.sql, main.params)
        return [(*row, *extra) for row in cursor.fetchall()] if cursor.description else []


def saved(row: models.Model, returned: Sequence[tuple[Any, ...]]) -> None:
    """Mark a row inserted by ``insert`` as saved, with the primary key it returned."""
    db = _db()
    [(row.pk, *_)] = returned
    row._state.adding = False
    row._state.db = db.alias


def bulk_insert(rows: Sequence[models.Model]) -> None:
    """Insert new rows of one model and give them their primary keys, as ``bulk_create`` does. On
    PostgreSQL by ``COPY`` (the keys drawn from the table's sequence first, in one statement): preparing
    thousands of values for a multi-row ``INSERT`` costs more than signing the certificates they describe."""
    db = _db()
    if not rows:
        return
    model = type(rows[0])
    if db.vendor != "postgresql":
        model._default_manager.bulk_create(rows)
        return
    opts, qn = model._meta, db.ops.quote_name
    for row in rows:
        row._prepare_related_fields_for_save(operation_name="bulk_create")  # type: ignore[attr-defined]
    with db.cursor() as cursor:
        cursor.execute(
            "SELECT nextval(pg_get_serial_sequence(%s, %s)) FROM generate_series(1, %s)",
            [opts.db_table, opts.pk.column, len(rows)],
        )
        for row, (pk,) in zip(rows, cursor.fetchall(), strict=True):
            row.pk = pk
        fields = opts.concrete_fields
        columns = ", ".join(qn(f.column) for f in fields)
        values = _insert_values(fields, db)
        with cursor.cursor.copy(f"COPY {qn(opts.db_table)} ({columns}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(values(row))
    for row in rows:
        row._state.adding = False
        row._state.db = db.alias


@dataclass(frozen=True)
class _Compiled:
    """What ``Prepared`` keeps of a compiled queryset: its SQL, and how its rows become instances."""

    locks: bool
    sql: str
    params: tuple[Any, ...]
    at: tuple[int, ...]  # where each value goes in ``params``
    compiler: Any
    converters: dict[int, Any]
    model: type[models.Model]
    start: int
    end: int
    init_list: list[str]
    populators: list[Any]
    annotations: dict[str, int]


class Prepared:
    """A read whose SQL never changes but for its values: ``Prepared(lambda v: Model.objects.filter(pk=v))``
    then ``.get(pk)``; ``kinds`` says the type of each value when there are several or they are not
    integers (``Prepared(lambda org, slug: ..., kinds=(str, str))``, ``.get("acme", "web")``). Compiled
    once per connection; rows become instances as the queryset makes them (``select_related`` rows
    attached, deferred fields left deferred, annotations set, field converters applied)."""

    MARKER = -(2**62) + 7  # stands for the value while compiling; an integer no key takes

    def __init__(self, build: Callable[..., models.QuerySet], *, kinds: tuple[type, ...] = (int,)) -> None:
        self.build, self.kinds = build, kinds

    def _markers(self) -> list[Any]:
        # text no column holds (PostgreSQL text cannot hold NUL); never sent, only looked for in the params
        return [self.MARKER + i if k is int else f"\x00prepared {i}\x00" for i, k in enumerate(self.kinds)]

    def _compiled(self) -> _Compiled:
        entry = _cache().get(self)
        if entry is None:
            from django.db.models.query import get_related_populators

            db = _db()
            markers = self._markers()
            queryset = self.build(*markers)
            compiler = queryset.query.get_compiler(connection=db)
            text, params = compiler.as_sql()
            at = []
            for marker in markers:
                found = [i for i, p in enumerate(params) if type(p) is type(marker) and p == marker]
                if len(found) != 1:
                    raise ValueError("a prepared query takes each of its values exactly once")
                at.append(found[0])
            select, klass_info = compiler.select, compiler.klass_info
            start, end = klass_info["select_fields"][0], klass_info["select_fields"][-1] + 1
            entry = _cache()[self] = _Compiled(
                locks=bool(queryset.query.select_for_update),
                sql=text,
                params=tuple(params),
                at=tuple(at),
                compiler=compiler,
                converters=compiler.get_converters([s[0] for s in select[0 : compiler.col_count]]),
                model=klass_info["model"],
                start=start,
                end=end,
                init_list=[f[0].target.attname for f in select[start:end]],
                populators=get_related_populators(klass_info, select, db.alias),  # type: ignore[call-arg]
                annotations=dict(compiler.annotation_col_map or {}),
            )
        return entry

    def all(self, *values: Any) -> list[models.Model]:
        db, c = _db(), self._compiled()
        if c.locks and not db.in_atomic_block:
            raise TransactionManagementError("select_for_update cannot be used outside of a transaction.")
        params = list(c.params)
        for at, value in zip(c.at, values, strict=True):
            params[at] = value
        with db.cursor() as cursor:
            cursor.execute(c.sql, params)
            rows = cursor.fetchall()
        if c.converters:
            rows = list(c.compiler.apply_converters(rows, c.converters))
        found = []
        for row in rows:
            obj = c.model.from_db(db.alias, c.init_list, row[c.start : c.end])
            for populator in c.populators:
                populator.populate(row, obj)
            for name, position in c.annotations.items():
                setattr(obj, name, row[position])
            found.append(obj)
        return found

    def first(self, *values: Any) -> models.Model | None:
        """The first row (the queryset's order), or None."""
        found = self.all(*values)
        return found[0] if found else None

    def get(self, *values: Any) -> models.Model:
        found = self.all(*values)
        if len(found) != 1:
            model = self.build(*self._markers()).model
            if not found:
                raise model.DoesNotExist(f"{model._meta.object_name} matching query does not exist.")
            raise model.MultipleObjectsReturned(f"get() returned more than one {model._meta.object_name}")
        return found[0]
