-- Background-job bookkeeping shared by every server instance of a deployment.
-- Keep in step with ../sqlite/0003_jobs.sql.

-- When each periodic job is next due. An instance submits a job only after moving next_at
-- forward with a compare-and-swap, so N instances submit each round once, not N times.
CREATE TABLE job_schedule (
    kind     TEXT    PRIMARY KEY,
    next_at  BIGINT  NOT NULL
);

-- Progress marks of resumable jobs (the audit-log export's last exported row id). Advanced with
-- a compare-and-swap after the job's output is durable, so a redelivered job redoes at most the
-- last batch, writing the same output again.
CREATE TABLE job_marks (
    name   TEXT    PRIMARY KEY,
    value  BIGINT  NOT NULL
);
