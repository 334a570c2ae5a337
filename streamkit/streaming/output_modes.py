"""Which output modes a stateful plan runs in: Spark's refusals (checked against PySpark
4.3), each a :class:`~streamkit.errors.PlanError` whose message says what to change. The
checks raise or return; none changes the plan."""

from __future__ import annotations

from streamkit.errors import PlanError
from streamkit.plan import Aggregate, Watermark
from streamkit.streaming.agg_steps import OutputMode
from streamkit.windows import SessionWindow

OUTPUT_MODES: tuple[OutputMode, ...] = ("append", "update", "complete")
_LOST = (
    "Invalid streaming output mode: append. This output mode is not supported for "
    "streaming aggregations without watermark (Spark's refusal too): the watermark is on "
    "{column!r}, but no window of the aggregation is on it or on a plain rename of it "
    "(a column computed from it after with_watermark, such as {column} + interval, or a "
    "window on an expression, carries no watermark); compute the event time before "
    "with_watermark and put the watermark on it, group by sk.window({column!r}, ...), or "
    "use output_mode 'update' (which then never evicts state nor drops late rows)"
)


def check_output_mode(
    agg: Aggregate | None, watermarked: bool, mode: OutputMode, mark: Watermark | None = None
) -> None:
    """Refuse what Spark refuses for this output mode (``watermarked``: a window of
    ``agg`` carries the watermark ``mark``)."""
    if agg is None and mode == "complete":
        raise PlanError("complete mode needs an aggregation (it re-emits the whole result)")
    if agg is not None and mode == "append" and not watermarked and mark is not None:
        raise PlanError(_LOST.format(column=mark.column))
    if agg is not None and mode == "append" and not watermarked:
        raise PlanError(
            "append mode on an aggregation needs a watermark, so that a window is emitted "
            "once, when it can no longer change: add .with_watermark(column, delay) "
            "before group_by, or use output_mode 'update' or 'complete'"
        )
    if agg is not None and mode == "update" and isinstance(agg.window, SessionWindow):
        raise PlanError(
            "update mode is not supported for session windows (Spark refuses it too): a "
            "later row can merge two sessions already emitted, and update mode cannot "
            "retract them; use output_mode 'append' (a session once, when the watermark "
            "passes its end) or 'complete'"
        )


def check_one_event_time(carrying: list[str], mode: OutputMode) -> None:
    """Refuse an aggregation whose group keys (the window among them) include more than
    one column carrying the watermark, in append and update mode: Spark fails its first
    batch there (it runs it in complete mode, which never evicts)."""
    if len(carrying) > 1 and mode != "complete":
        raise PlanError(
            "[MULTIPLE_EVENT_TIME_COLUMNS] More than one event time columns are available "
            f"(Spark fails the batch in {mode} mode): the group keys "
            f"{', '.join(repr(c) for c in carrying)} all carry the watermark; group by "
            "one of them (a window on the watermarked column, or the column itself)"
        )
