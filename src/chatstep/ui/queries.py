"""The SQL behind the UI's canned queries and charts, over the history and the journals' schemas.

Charts over one run group its calls into at most ~200 time buckets whose width adapts to the
run's length (one second for a short run, longer for a long one), so a chart never needs more
rows than Datasette returns (``max_returned_rows``).
"""

from __future__ import annotations

__all__ = [
    "BATCH_JOBS",
    "CACHE_HITS",
    "COST_PER_DAY",
    "ERRORS",
    "JOURNAL_FAILED_ROWS",
    "JOURNAL_SUMMARY",
    "JOURNAL_TIMELINE",
    "LATEST_RUNS",
    "RUN",
    "RUNS",
    "RUN_SUMMARY",
    "RUN_TIMELINE",
]

#: Row cap of the list queries (Datasette also caps a page at ``max_returned_rows``).
LIMIT = 1000

RUNS = f"""
select
  run_id,
  count(*) as calls,
  sum(error is not null) as failed,
  sum(cached) as cached,
  printf('%.6f', coalesce(sum(cost_usd), 0)) as cost_usd,
  coalesce(sum(prompt_tokens), 0) as prompt_tokens,
  coalesce(sum(completion_tokens), 0) as completion_tokens,
  group_concat(distinct model) as models,
  replace(substr(min(time), 1, 19), 'T', ' ') as started,
  replace(substr(max(time), 1, 19), 'T', ' ') as last_call
from calls
where run_id is not null
group by run_id
order by max(seq) desc
limit {LIMIT}
"""

# The newest run, when :run_id is left empty.
_RUN_ID = (
    "coalesce(nullif(:run_id, ''), "
    "(select run_id from calls where run_id is not null order by seq desc limit 1))"
)

RUN = f"""
select
  seq as call, time, step, model, cached, prompt_tokens, completion_tokens, cost_usd,
  round(latency_ms) as latency_ms, error
from calls
where run_id = {_RUN_ID}
order by seq
limit {LIMIT}
"""

RUN_SUMMARY = f"""
select
  count(*) as calls,
  sum(error is not null) as failed,
  printf('%.6f', coalesce(sum(cost_usd), 0)) as cost_usd,
  coalesce(sum(total_tokens), 0) as tokens
from calls
where run_id = {_RUN_ID}
"""

RUN_TIMELINE = f"""
with picked as (
  select julianday(time) * 86400.0 as t, total_tokens, cost_usd, error, cached
  from calls where run_id = {_RUN_ID}
),
bounds as (select min(t) as t0, max(max(t) - min(t), 0) as span from picked),
width as (select t0, cast(span / 200 as integer) + 1 as seconds from bounds)
select
  strftime('%Y-%m-%dT%H:%M:%SZ',
    (t0 + cast((t - t0) / seconds as integer) * seconds) / 86400.0) as bucket,
  seconds as bucket_seconds,
  count(*) as calls,
  sum(error is not null and error not like 'RateLimitError%') as failed,
  sum(error like 'RateLimitError%') as rate_limited,
  sum(cached) as cached,
  round(coalesce(sum(total_tokens), 0) * 60.0 / seconds) as tokens_per_minute,
  round(coalesce(sum(cost_usd), 0), 6) as cost_usd
from picked, width
group by bucket
order by bucket
"""

LATEST_RUNS = f"""
select run_id from calls where run_id is not null
group by run_id order by max(seq) desc limit {LIMIT}
"""

ERRORS = f"""
select seq as call, time, run_id, step, model, error
from calls
where error is not null
order by seq desc
limit {LIMIT}
"""

COST_PER_DAY = f"""
select
  substr(time, 1, 10) as day,
  coalesce(model, '(none)') as model,
  count(*) as calls,
  sum(error is not null) as failed,
  coalesce(sum(total_tokens), 0) as tokens,
  round(coalesce(sum(cost_usd), 0), 6) as cost_usd
from calls
group by day, model
order by day desc, cost_usd desc
limit {LIMIT}
"""

CACHE_HITS = f"""
select
  substr(time, 1, 10) as day,
  coalesce(model, '(none)') as model,
  count(*) as calls,
  sum(cached) as hits,
  round(1.0 * sum(cached) / count(*), 4) as hit_rate
from calls
group by day, model
order by day desc, calls desc
limit {LIMIT}
"""

BATCH_JOBS = f"""
select
  id,
  datetime(created_at, 'unixepoch') as created,
  status,
  json_extract(data, '$.model') as model,
  json_extract(data, '$.endpoint') as endpoint,
  json_extract(data, '$.row_count') as rows,
  json_extract(data, '$.request_counts.completed') as completed,
  json_extract(data, '$.request_counts.failed') as failed,
  json_array_length(data, '$.parts') as batches,
  json_extract(data, '$.source') as source,
  json_extract(data, '$.submit_error') as submit_error
from jobs
order by created_at desc
limit {LIMIT}
"""

JOURNAL_SUMMARY = """
select
  (select value from meta where key = 'run_id') as run_id,
  count(*) as rows,
  coalesce(sum(status = 'ok'), 0) as ok,
  coalesce(sum(status = 'failed'), 0) as failed,
  printf('%.6f', coalesce(sum(cost), 0)) as cost_usd,
  coalesce(sum(json_extract(record, '$.usage.total_tokens')), 0) as tokens,
  coalesce(sum(max(coalesce(json_extract(record, '$.attempts'), 1) - 1, 0)), 0) as retries,
  datetime(min(finished), 'unixepoch') as first_finished,
  datetime(max(finished), 'unixepoch') as last_finished
from rows
"""

JOURNAL_FAILED_ROWS = f"""
select
  idx as row,
  json_extract(record, '$.error_type') as error_type,
  json_extract(record, '$.status_code') as status_code,
  json_extract(record, '$.error') as error,
  json_extract(record, '$.attempts') as attempts,
  datetime(finished, 'unixepoch') as finished
from rows
where status = 'failed'
order by idx
limit {LIMIT}
"""

JOURNAL_TIMELINE = """
with picked as (
  select
    finished as t,
    status,
    cost,
    json_extract(record, '$.usage.total_tokens') as tokens,
    coalesce(json_extract(record, '$.attempts'), 1) as attempts,
    json_extract(record, '$.status_code') as status_code
  from rows
),
bounds as (select min(t) as t0, max(max(t) - min(t), 0) as span from picked),
width as (select t0, cast(span / 200 as integer) + 1 as seconds from bounds)
select
  strftime('%Y-%m-%dT%H:%M:%SZ', t0 + cast((t - t0) / seconds as integer) * seconds,
    'unixepoch') as bucket,
  seconds as bucket_seconds,
  count(*) as rows,
  sum(status = 'failed' and coalesce(status_code, 0) != 429) as failed,
  sum(status_code = 429) as rate_limited,
  sum(max(attempts - 1, 0)) as retries,
  round(coalesce(sum(tokens), 0) * 60.0 / seconds) as tokens_per_minute,
  round(coalesce(sum(cost), 0), 6) as cost_usd
from picked, width
group by bucket
order by bucket
"""
