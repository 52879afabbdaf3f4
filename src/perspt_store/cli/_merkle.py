"""Commands on a session's Merkle commit log: ``verify``, ``log``, ``checkpoint`` and
``rollback``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import click

from .. import _engine
from ..commitlog import REMOVED_STATE, Checkpoint, NodeCommit
from ._common import (
    OutputFile,
    document_options,
    open_store,
    output_options,
    require_session,
    session_argument,
)
from ._nodes import commit_seqs
from ._output import Column, Format, emit_json, emit_rows, plural


def read_key(path: Path | None) -> bytes | None:
    """A 32-byte checkpoint key from a file holding it raw or as 64 hex digits."""
    if path is None:
        return None
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise click.BadParameter(
            f"cannot read {path}: {_engine.os_reason(exc)}", param_hint="'--key-file'"
        ) from exc
    text = raw.strip()
    if len(text) == 64 and all(chr(c) in "0123456789abcdefABCDEF" for c in text):
        return bytes.fromhex(text.decode())
    if len(raw) == 32:
        return raw
    raise click.BadParameter(
        f"{path} must hold the key as 32 raw bytes or 64 hex digits", param_hint="'--key-file'"
    )


def read_checkpoint(path: Path) -> Checkpoint:
    """The checkpoint in ``path``; a file that is unreadable or holds no valid checkpoint is a
    usage error (exit 2), so exit 1 from ``verify`` always means the log failed."""
    try:
        return Checkpoint.from_json(path.read_bytes())
    except OSError as exc:
        raise click.BadParameter(
            f"cannot read {path}: {_engine.os_reason(exc)}", param_hint="'--against'"
        ) from exc
    except ValueError as exc:
        raise click.BadParameter(f"{path}: {exc}", param_hint="'--against'") from exc


def commit_dict(commit: NodeCommit) -> dict[str, Any]:
    return {
        "seq": commit.seq,
        "node_id": commit.node_id,
        "kind": commit.kind,
        "leaf_hash": commit.leaf_hash,
        "state_root": commit.state_root,
        "log_root": commit.log_root,
        "log_size": commit.log_size,
    }


key_file_option = click.option(
    "--key-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A file with the 32-byte checkpoint key (raw, or 64 hex digits).",
)


@click.command()
@session_argument
@click.option(
    "--against",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A checkpoint file (from `perspt-store checkpoint`) the log must still extend.",
)
@key_file_option
@document_options
@click.pass_context
def verify(
    ctx: click.Context, session_id: str, against: Path | None, key_file: Path | None, fmt: Format
) -> None:
    """Recompute a session's Merkle log from its rows; exit 1 if anything differs.

    Reports node states edited, deleted, inserted or reordered behind the store's back,
    forged log entries, a merkle_root that no longer matches and, with --against, a log
    that no longer extends a checkpoint you kept.

    \b
    Example:
        perspt-store verify SESSION --against checkpoint.json --key-file key.hex
    """
    key = read_key(key_file)
    checkpoint = None if against is None else read_checkpoint(against)
    with open_store(ctx) as store:
        require_session(store, session_id)
        report = store.verify_session(session_id, against=checkpoint, key=key)
    if fmt != "table":
        emit_json({"ok": report.ok, **report.model_dump()}, fmt)
    else:
        verdict = "OK" if report.ok else "FAILED"
        # One root a line: a 64-digit root fits 80 columns whole.
        click.echo(f"{verdict}: session {session_id}: {plural(report.log_size, 'commit')}")
        click.echo(f"  log root    {report.log_root.hex()}")
        click.echo(f"  state root  {report.state_root.hex()}")
        for note in report.notes:
            click.echo(f"note: {note}")
        if report.problems:
            emit_rows(
                [p.model_dump() for p in report.problems],
                "table",
                columns=["kind", "seq", "node_id", "detail"],
                title="Problems",
            )
    if not report.ok:
        ctx.exit(1)


@click.command()
@session_argument
@output_options
@click.pass_context
def log(ctx: click.Context, session_id: str, fmt: Format) -> None:
    """List a session's Merkle commits: seq, node, kind, the node's state it recorded and
    the roots after each.

    \b
    Example:
        perspt-store log SESSION --nl
    """
    with open_store(ctx) as store:
        require_session(store, session_id)
        commits = store.get_commit_log(session_id)
        states = store.get_node_states(session_id)
    state_at = {
        seq: row.state for seq, row in zip(commit_seqs(states, commits), states, strict=True)
    }
    rows = []
    for commit in commits:
        state = state_at.get(commit.seq)
        if fmt == "table" and state == REMOVED_STATE:
            state = "(removed)"
        rows.append({**commit_dict(commit), "state": state})
    emit_rows(
        rows,
        fmt,
        columns=[
            "seq",
            "node_id",
            "kind",
            "state",
            Column("leaf_hash", drop=2),
            Column("state_root", drop=1),
            "log_root",
        ],
        title=f"Commit log of {session_id}",
        caption=plural(len(commits), "commit"),
    )


@click.command()
@session_argument
@key_file_option
@click.option(
    "-o",
    "--output",
    type=OutputFile(),
    help="Write the checkpoint to this file instead of standard output.",
)
@click.pass_context
def checkpoint(
    ctx: click.Context, session_id: str, key_file: Path | None, output: Path | None
) -> None:
    """Print a JSON checkpoint of a session's log (MAC'd with --key-file); keep it safe.

    \b
    Example:
        perspt-store checkpoint SESSION --key-file key.hex -o checkpoint.json
    """
    key = read_key(key_file)
    with open_store(ctx) as store:
        require_session(store, session_id)
        document = store.checkpoint(session_id, key=key).to_json()
    if output is None:
        click.echo(document)
        return
    try:
        output.write_text(document + "\n")
    except OSError as exc:
        raise click.ClickException(
            f"cannot write the checkpoint to {output}: {_engine.os_reason(exc)}"
        ) from exc


def change_dict(node_id: str, kind: str, state: str | None) -> dict[str, Any]:
    """One node a rollback restores or removes (``state``: the state restored)."""
    return {"node_id": node_id, "kind": kind, "state": None if kind == "remove" else state}


def print_changes(changes: list[dict[str, Any]], *, done: bool) -> None:
    """One line per node: ``restored NODE state S`` / ``removed NODE`` (``restore`` /
    ``remove`` before a dry run's nothing-was-written)."""
    width = max((len(c["node_id"]) for c in changes), default=0)
    for change in changes:
        verb = f"{change['kind']}d" if done else change["kind"]
        if change["kind"] == "remove":
            click.echo(f"  {verb:<9} {change['node_id']}")
        else:
            click.echo(f"  {verb:<9} {change['node_id']:<{width}}  state {change['state']}")


@click.command()
@session_argument
@click.option(
    "--to",
    "target",
    required=True,
    metavar="SEQ|ROOT_HEX",
    help="A commit seq (0-based), or a state root as 64 hex digits.",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Only print what would be restored and removed; write nothing.",
)
@document_options
@click.pass_context
def rollback(ctx: click.Context, session_id: str, target: str, dry_run: bool, fmt: Format) -> None:
    """Restore a session's node states as of a commit, by appending commits.

    Nothing is deleted: the rollback is recorded in the log as restore and remove commits.
    Prints the nodes restored (with the state they are back in) and removed; --dry-run
    prints the same without writing anything.

    \b
    Example:
        perspt-store rollback SESSION --to 12 --dry-run
        perspt-store rollback SESSION --to 12
    """
    if re.fullmatch(r"[0-9]+", target):
        options: dict[str, Any] = {"to_seq": int(target)}
    elif re.fullmatch(r"[0-9a-fA-F]{64}", target):
        options = {"to_root": bytes.fromhex(target)}
    else:
        raise click.BadParameter(
            "give a commit seq or a 64-hex-digit state root", param_hint="--to"
        )
    what = f"commit {target}" if "to_seq" in options else f"state root {target[:16]}…"
    if dry_run:
        with open_store(ctx) as store:
            require_session(store, session_id)
            plan = store.rollback_plan(session_id, **options)
        changes = [change_dict(c.node_id, c.kind, c.record.state) for c in plan]
        if fmt != "table":
            emit_json({"dry_run": True, "changes": changes}, fmt)
            return
        if not changes:
            click.echo(f"dry run: session {session_id} is already there; nothing to append")
            return
        click.echo(
            f"dry run: rolling session {session_id} back to {what} would append "
            f"{plural(len(changes), 'commit')}:"
        )
        print_changes(changes, done=False)
        click.echo("nothing was written")
        return
    with open_store(ctx, write=True) as store:
        require_session(store, session_id)
        before = len(store.get_commit_log(session_id))
        head = store.rollback(session_id, **options)
        with store.consistent_read():
            log = store.get_commit_log(session_id)
            states = store.get_node_states(session_id)
    state_at = {
        seq: row.state for seq, row in zip(commit_seqs(states, log), states, strict=True)
    }
    # The rollback's commits are the restore and remove commits appended since (another
    # writer's commits meanwhile are plain commits).
    changes = [
        change_dict(c.node_id, c.kind, state_at.get(c.seq))
        for c in log[before:]
        if c.kind in ("restore", "remove") and c.seq <= head.seq
    ]
    if fmt != "table":
        emit_json({**commit_dict(head), "changes": changes}, fmt)
        return
    click.echo(f"session {session_id} is at commit {head.seq}; state root")
    click.echo(f"  {head.state_root.hex()}")  # whole on its own line, even at 80 columns
    if changes:
        print_changes(changes, done=True)
    else:
        click.echo("  nothing differed: no commit appended")
