"""Notifications that reach people: e-mail, SMS, Telegram, ntfy, WhatsApp.

Alert events the alert service notifies are routed to contacts (``routing``), queued
per channel on disk (``queue``), sent by one loop per channel (``service``) and
acknowledged back through the command boundary from a signed link or an SMS reply
(``acks``). ``agent.notify.config`` declares ``[notify]``.

Nothing is re-exported here: ``agent.config`` imports ``agent.notify.config``, so this
package's ``__init__`` must import nothing of the agent.
"""
