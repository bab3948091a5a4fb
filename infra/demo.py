"""``contact-centre demo``: a demo tenant fed a realistic mix of interactions on every channel."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp


def demo_interactions(now: datetime) -> list[dict[str, Any]]:
    """A morning in a small shop's contact centre, on all six channel kinds."""
    shop_number = "+442071838750"

    def at(minutes_ago: int) -> str:
        return (now - timedelta(minutes=minutes_ago)).isoformat().replace("+00:00", "Z")

    return [
        {
            "channel": "sms",
            "provider": "twilio",
            "provider_message_id": "SMdemo0001",
            "from": {"kind": "phone", "address": "+447700900123", "display_name": "Ann Jones"},
            "to": {"kind": "phone", "address": shop_number},
            "body": "Hi, my order #4411 hasn't arrived yet. Can you check?",
            "occurred_at": at(95),
        },
        {
            "channel": "sms",
            "provider": "twilio",
            "provider_message_id": "SMdemo0002",
            "from": {"kind": "phone", "address": "+447700900123"},
            "to": {"kind": "phone", "address": shop_number},
            "body": "It was due on Tuesday.",
            "occurred_at": at(94),
        },
        {
            "channel": "whatsapp",
            "provider": "twilio",
            "provider_message_id": "SMdemo0003",
            "from": {"kind": "phone", "address": "whatsapp:+447700900456", "display_name": "Bilal"},
            "to": {"kind": "phone", "address": f"whatsapp:{shop_number}"},
            "body": "Do you have the blue jacket in size M?",
            "occurred_at": at(80),
            "attachments": [{"name": "jacket.jpg", "content_type": "image/jpeg", "size": 48213}],
        },
        {
            "channel": "voice",
            "provider": "twilio",
            "provider_message_id": "CAdemo0004",
            "from": {"kind": "phone", "address": "+447700900789"},
            "to": {"kind": "phone", "address": shop_number},
            "body": "Voicemail: Hello, this is Carla, please call me back about a refund.",
            "occurred_at": at(70),
        },
        {
            "channel": "email",
            "provider": "smtp",
            "provider_message_id": "<demo-0005@mail.example>",
            "from": {
                "kind": "email",
                "address": "Dev.Patel@Example.com",
                "display_name": "Dev Patel",
            },
            "to": {"kind": "email", "address": "support@shop.example"},
            "subject": "Invoice for order 5120",
            "thread_key": "<demo-0005@mail.example>",
            "body": "Hello,\n\nCould you send me a VAT invoice for order 5120?\n\nThanks, Dev",
            "occurred_at": at(60),
        },
        {
            "channel": "webchat",
            "provider": "webchat",
            "provider_message_id": "wc-demo-0006",
            "from": {"kind": "visitor", "address": "v-3f9c2a", "display_name": "Emma"},
            "body": "Is click and collect available in Leeds?",
            "occurred_at": at(45),
        },
        {
            "channel": "social",
            "provider": "meta",
            "provider_message_id": "m_demo0007",
            "from": {"kind": "handle", "address": "instagram:frankie.k", "display_name": "Frankie"},
            "to": {"kind": "handle", "address": "instagram:shop"},
            "body": "Love the new collection! When is the sale?",
            "occurred_at": at(30),
        },
        {
            "channel": "social",
            "provider": "slack",
            "provider_message_id": "1700000000.000100",
            "from": {"kind": "handle", "address": "slack:U024BE7LH", "display_name": "Gita (Acme)"},
            "to": {"kind": "handle", "address": "slack:C0SHARED"},
            "thread_key": "slack:C0SHARED:1700000000.000100",
            "body": "Our bulk order needs to ship by Friday, is that OK?",
            "occurred_at": at(20),
        },
        {
            "channel": "email",
            "provider": "smtp",
            "provider_message_id": "<demo-0009@mail.example>",
            "from": {"kind": "email", "address": "dev.patel@example.com"},
            "to": {"kind": "email", "address": "support@shop.example"},
            "subject": "Re: Invoice for order 5120",
            "thread_key": "<demo-0005@mail.example>",
            "body": "Also, please use my company name: Patel Ltd.",
            "occurred_at": at(10),
        },
        {
            "channel": "webchat",
            "provider": "webchat",
            "provider_message_id": "wc-demo-0010",
            "from": {"kind": "visitor", "address": "v-3f9c2a"},
            "body": "I mean the Trinity store.",
            "occurred_at": at(5),
        },
    ]


async def feed_demo(base_url: str, token: str) -> list[dict[str, Any]]:
    """Post the demo interactions and two agent replies; returns the API answers."""
    headers = {"Authorization": f"Bearer {token}"}
    answers: list[dict[str, Any]] = []
    async with aiohttp.ClientSession(headers=headers) as session:
        for doc in demo_interactions(datetime.now(UTC)):
            async with session.post(f"{base_url}/v1/interactions", json=doc) as response:
                response.raise_for_status()
                answers.append(await response.json())
        for index, text in (
            (0, "Sorry Ann! It left our warehouse today, tracking to follow."),
            (4, "Hi Dev, the invoice is attached to this email."),
        ):
            conversation_id = answers[index]["conversation_id"]
            async with session.post(
                f"{base_url}/v1/conversations/{conversation_id}/replies", json={"body": text}
            ) as response:
                response.raise_for_status()
    return answers
