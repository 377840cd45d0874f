import pandas as pd
import streamlit as st

from glmtts.batch import (
    BatchInputError,
    BatchRunner,
    LineResult,
    Progress,
    load_tasks,
    zip_results,
)
from glmtts.batch.files import (
    INPUTS_ENV,
    UploadBudget,
    digest,
    new_space,
    remove_old_uploads,
    run_folder,
    save_uploads,
    server_folders,
    server_path,
    space_folder,
)
from glmtts.errors import GlmTtsError
from monitoring.i18n import N_, _, ngettext, say
from ui import frame
from ui.form_memory import KEEP
from ui.format import fmt_bytes, fmt_seconds
from ui.language import speaking_now
from ui.state import tts_session

COLUMNS = ["line", "uttid", "status", "wall", "audio", "retained", "peak", "attempts", "memory",
           "reason / notes"]
FIGURES = {"host_rss": N_("host RSS"), "torch_reserved": N_("torch reserved")}
#: Column headers as shown (the rows keep :data:`COLUMNS` as keys).
HEADERS = {"line": N_("line"), "uttid": "uttid", "status": N_("status"), "wall": N_("wall"),
           "audio": N_("audio"), "retained": N_("retained"), "peak": N_("peak"),
           "attempts": N_("attempts"), "memory": N_("memory"),
           "reason / notes": N_("reason / notes")}
STATUS = {"ok": N_("ok"), "failed": N_("failed"), "skipped": N_("skipped"),
          "pending": N_("pending")}


def _row(result: LineResult) -> dict:
    status = _(STATUS.get(result.status, result.status)) + (
        _(" (earlier run)") if result.resumed else "")
    if result.recovery:
        status += _(" after retry")
    detail = say(result.reason)
    notes = [say(n) for n in ([result.recovery] if result.recovery else []) + list(result.notes)]
    if notes:
        detail = _("; ").join(([detail] if detail else []) + notes)
    return {"line": result.line, "uttid": result.uttid or "", "status": status,
            "wall": fmt_seconds(result.wall_s) if result.wall_s is not None else "",
            "audio": f"{result.audio_s:.2f} s" if result.audio_s is not None else "",
            "retained": fmt_bytes(result.retained_bytes, signed=True)
            if result.retained_bytes is not None else "",
            "peak": fmt_bytes(result.peak_delta_bytes, signed=True)
            if result.peak_delta_bytes is not None else "",
            "attempts": str(result.attempts) if result.attempts else "",
            "memory": _(FIGURES[result.memory]) if result.memory in FIGURES
            else result.memory or "",
            "reason / notes": detail}


def _progress_text(p: Progress) -> str:
    text = _("{done}/{total} lines · {ok} ok · {failed} failed · {skipped} skipped").format(
        done=p.done, total=p.total, ok=p.ok, failed=p.failed, skipped=p.skipped)
    text += _(" · {time} elapsed").format(time=fmt_seconds(p.elapsed_s))
    if p.done < p.total and p.eta_s is not None:
        text += _(" · about {time} left").format(time=fmt_seconds(p.eta_s))
    return text


def _summary(p: Progress) -> str:
    """:meth:`Progress.summary`, in the UI's language."""
    text = ngettext("{ok} of {total} line ok, {skipped} skipped (invalid), {failed} failed",
                    "{ok} of {total} lines ok, {skipped} skipped (invalid), {failed} failed",
                    p.total).format(ok=p.ok, total=p.total, skipped=p.skipped, failed=p.failed)
    if p.resumed:
        text += _("; {count} ok from an earlier run").format(count=p.resumed)
    return text


def _table(slot, rows: dict) -> None:
    frame_ = pd.DataFrame(list(rows.values()), columns=COLUMNS).rename(
        columns={c: _(h) for c, h in HEADERS.items()})
    wide = st.column_config.TextColumn(width="medium")
    slot.dataframe(frame_, hide_index=True, width="stretch",
                   column_config={_(HEADERS[c]): wide for c in ("retained", "peak", "wall")})


@st.cache_resource(show_spinner=False)
def _old_uploads_removed() -> int:
    """Once per server process: upload spaces unused for a day are removed."""
    return len(remove_old_uploads())


frame.begin()
_old_uploads_removed()
st.title(_("📦 Batch"))
st.caption(_("One task per line, upstream GLM-TTS fields: `uttid`, `syn_text`, `prompt_text`, "
             "`prompt_speech` (a path relative to the JSONL), and optionally `sample_rate`, "
             "`use_kv_cache`, `seed`, `engine`. A failing line never stops the others; each "
             "finished line is saved at once, so running the same tasks again continues where "
             "it stopped."))
session = tts_session()
# This browser session's own upload folder: a random name no other session can know or type.
space = st.session_state.setdefault("_batch_space", new_space())

SOURCES = (N_("Upload"), N_("Path on the server"))
source = st.radio(_("Tasks"), SOURCES, key="batch_source", **KEEP, horizontal=True,
                  format_func=speaking_now(lambda s: _(s)))
refs = st.file_uploader(_("Reference audio named by `prompt_speech` (files, or a zip keeping "
                          "their folders)"), accept_multiple_files=True, key="batch_refs",
                        type=["wav", "flac", "ogg", "mp3", "zip"],
                        help=_("Kept for this browser session only; {limits}.").format(
                            limits=UploadBudget().limits()))
ref_files = [(f.name, f.getvalue()) for f in refs or []]

tasks_path = None
run_dir = None
extra_folders = []
try:
    if source == "Upload":
        upload = st.file_uploader(_("Tasks (JSONL)"), type=["jsonl", "json", "txt"],
                                  key="batch_jsonl")
        if upload is not None:
            data = upload.getvalue()
            key = digest([upload.name.encode(), data,
                          *(p for name, blob in ref_files for p in (name.encode(), blob))])
            folder = space_folder(space) / key
            problems = save_uploads([*ref_files, ("tasks.jsonl", data)], folder)  # JSONL last
            for problem in problems:
                st.warning(say(problem))
            tasks_path = folder / "tasks.jsonl"
            run_dir = run_folder(upload.name, key, space)
    else:
        allowed = ", ".join(f"`{f}`" for f in server_folders())
        value = st.text_input(_("JSONL path on the server"), key="batch_path", **KEEP,
                              placeholder="example.jsonl",
                              help=_("Must lie inside {folders} (set {variable} to change); "
                                     "reference audio must lie in the JSONL's folder").format(
                                  folders=allowed, variable=INPUTS_ENV))
        if value.strip():
            tasks_path = server_path(value)
            refs_key = digest(p for name, blob in ref_files for p in (name.encode(), blob))
            if ref_files:
                folder = space_folder(space) / refs_key
                for problem in save_uploads(ref_files, folder):
                    st.warning(say(problem))
                extra_folders.append(folder)
            run_dir = run_folder(tasks_path.name, digest([str(tasks_path).encode(),
                                                          refs_key.encode()]),
                                 space if ref_files else None)
    plan = None
    if tasks_path is not None:
        plan = load_tasks(tasks_path, extra_folders=extra_folders, engine=session.engine_name,
                          engines={session.engine_name: session.engine})
except (BatchInputError, OSError) as exc:
    st.error(say(exc))
    plan = None

if plan is not None and run_dir is not None:
    c1, c2, c3 = st.columns(3)
    c1.metric(_("lines"), plan.lines)
    c2.metric(_("valid"), len(plan.tasks))
    c3.metric(_("invalid (skipped)"), len(plan.invalid))
    if plan.invalid:
        with st.expander(ngettext("{count} invalid line(s): they will be skipped",
                                  "{count} invalid line(s): they will be skipped",
                                  len(plan.invalid)).format(count=len(plan.invalid)),
                         expanded=len(plan.invalid) <= 10):
            st.dataframe(pd.DataFrame([(line, say(reason)) for line, reason in plan.problems()],
                                      columns=[_("line"), _("reason")]),
                         hide_index=True, width="stretch")
    st.caption(_("Results go to `{folder}` (WAVs + manifest.jsonl).").format(folder=run_dir))
    run = st.button(_("Run batch"), key="batch_run", type="primary", disabled=not plan.tasks)

    progress_slot = st.empty()
    table_slot = st.empty()
    if run:
        rows = {e.line: {"line": e.line, "uttid": e.uttid or "", "status": _("pending")}
                for e in plan.entries()}
        bar = progress_slot.progress(0.0, text=_("starting…"))
        _table(table_slot, rows)
        try:
            with BatchRunner(plan, run_dir, session, resume=True) as runner:
                for message in runner.messages:
                    st.info(say(message))
                for result in runner:
                    rows[result.line] = _row(result)
                    bar.progress(runner.progress.fraction, text=_progress_text(runner.progress))
                    _table(table_slot, rows)
                st.session_state["_batch_last"] = {
                    "run_dir": str(runner.output), "rows": rows,
                    "progress": _progress_text(runner.progress),
                    "summary": _summary(runner.progress), "worst": runner.progress.worst,
                    "zip": zip_results(runner.output),
                }
        except GlmTtsError as exc:  # folder busy or unwritable; lines themselves never raise
            st.error(say(exc))

    last = st.session_state.get("_batch_last")
    if last is not None and last["run_dir"] == str(run_dir.resolve()):
        progress_slot.progress(1.0, text=last["progress"])
        _table(table_slot, last["rows"])
        rows_done = [r for r in last["rows"].values() if r.get("retained")]
        if rows_done and any(r["peak"] == r["retained"] for r in rows_done) and all(
                r.get("memory") == _("host RSS") for r in rows_done):
            st.caption(_("On the CPU, peak and retained are often the same: glibc keeps the "
                         "memory a synthesis freed for the next one, so the process's RSS at "
                         "the end of a line is still its highest point (a light cleanup gives "
                         "it back)."))
        summary = last["summary"] + "."
        if last["worst"] == "ok":
            st.success(summary)
        else:
            # coloured by the worst outcome: a failed line is an error, a skipped one a warning
            show = st.error if last["worst"] == "failed" else st.warning
            show(_("{summary} See the reasons in the table; fix them and run again: lines "
                   "already ok are not redone.").format(summary=summary))
        st.download_button(_("Download results (zip: WAVs + manifest)"), last["zip"],
                           file_name=f"{run_dir.name}.zip", mime="application/zip",
                           key="batch_download")

frame.end()
