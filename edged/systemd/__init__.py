"""systemd integration: sd_notify (`notify`, supervisor only), journald (`journal`, every process).

Nothing is imported here on purpose: a worker that logs to the journal imports
`edged.systemd.journal` and must not pull in the notifier, which belongs to the supervisor alone
(only the main process may notify, `NotifyAccess=main`).
"""
