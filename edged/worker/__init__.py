"""The worker side: runs only in spawned worker processes.

A worker owns one backend (its runtime or device context is created here, never inherited), the
streams assigned to it, and the threads that decode and infer. It speaks to the supervisor only
through the pipe protocol (`edged.protocol`); it never imports MQTT, systemd or the supervisor.
"""
