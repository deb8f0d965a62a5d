"""Accountability built in: audit log, policy profiles, two-person review, erasure.

* :mod:`regard.accountability.audit`: append-only, hash-chained, fsync'ed audit log.
* :mod:`regard.accountability.policy`: policy profiles (operations, collections, roles,
  threshold floors as error rates, purpose/case reference, provenance, rate limits).
* :mod:`regard.accountability.review`: two-person verification of 1:N search results.
* :mod:`regard.accountability.erasure`: physical erasure and subject access export.
* :mod:`regard.accountability.guard`: the wrapper every operation runs in, from the API or the
  command line (typed calls in, typed results out), with :mod:`~regard.accountability.request`
  (caller, request fields), :mod:`~regard.accountability.records` (the one record builder),
  :mod:`~regard.accountability.results` (matches and summaries of typed results) and
  :mod:`~regard.accountability.local` (the operator at the command line).
* :mod:`regard.accountability.reviewing`: the reviewers' decisions on leads and views of the queue.

None of these modules knows HTTP or the terminal.
"""
