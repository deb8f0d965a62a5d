"""Accountability built in: audit log, policy profiles, two-person review, erasure.

* :mod:`regard.accountability.audit`: append-only, hash-chained, fsync'ed audit log.
* :mod:`regard.accountability.policy`: policy profiles (operations, collections, roles,
  threshold floors as error rates, purpose/case reference, provenance, rate limits).
* :mod:`regard.accountability.review`: two-person verification of 1:N search results.
* :mod:`regard.accountability.erasure`: physical erasure and subject access export.
* :mod:`regard.accountability.guard`: the wrapper the API runs around every operation (typed
  calls in, typed results out), with :mod:`~regard.accountability.request` (caller, request
  fields), :mod:`~regard.accountability.records` (the record builder) and
  :mod:`~regard.accountability.results` (matches and summaries of typed results).
* :mod:`regard.accountability.reviewing`: the reviewers' decisions on leads and views of the queue.

None of these modules knows HTTP or the terminal.
"""
