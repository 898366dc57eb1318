"""A real SMTP server on localhost that keeps what it receives (aiosmtpd): replays mail their
alerts to it, so the report counts mails that actually went over SMTP."""

from __future__ import annotations

import email
import socket
from pathlib import Path


class LocalMailbox:
    def __init__(self, host: str = "127.0.0.1"):
        self.host = host
        self.messages: list[email.message.Message] = []
        self._controller = None

    def start(self) -> tuple[str, int]:
        try:
            from aiosmtpd.controller import Controller
        except ImportError as exc:  # a dev dependency
            raise RuntimeError(
                "replay mails need aiosmtpd (pip install -e '.[dev]'), or pass --no-smtp"
            ) from exc
        mailbox = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):  # noqa: N802
                mailbox.messages.append(email.message_from_bytes(envelope.content))
                return "250 OK"

        with socket.socket() as probe:
            probe.bind((self.host, 0))
            port = probe.getsockname()[1]
        self._controller = Controller(Handler(), hostname=self.host, port=port)
        self._controller.start()
        return self.host, port

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def write(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for i, message in enumerate(self.messages, start=1):
            (folder / f"{i:03d}.eml").write_bytes(message.as_bytes())
