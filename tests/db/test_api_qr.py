"""QR codes and status answered from the database: the JSON payload, the PNG that a QR decoder
reads back to the same payload, the SVG; `qrCode` null when there is nothing to scan (and 409
for the images)."""

from __future__ import annotations

import io
from datetime import datetime

import trio
import zxingcpp
from PIL import Image

from tests.support import api as api_support
from tests.support.api import LiveApi
from wad.db.repo import sessions as sessions_repo

live_api = api_support.live_api

# The shape of a WhatsApp Web QR payload: ref, public keys, advertising secret.
PAYLOAD = ("2@Wq4cQm0rFz8f3T1vXKp0c2l5YfN4rE7uQ9hS1dA3kL6mP8oB0jV2nC4xZ7wR5tY9uI1o,"
           "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789+/ab=,ZyXwVuTsRqPoNmLkJiHgFeDcBa98+/76cd=,"
           "MTIzNDU2Nzg5MGFiY2RlZg==")


async def test_qr_json_png_and_svg_carry_the_stored_payload(live_api: LiveApi) -> None:
    with trio.fail_after(30):
        org = await live_api.create_org()
        admin = live_api.client((await live_api.create_token("ADMIN", org))["token"])
        await sessions_repo.set_state(live_api.ctx.db, organization_id=org,
                                      state="QR_CODE_PENDING", qr_payload=PAYLOAD)

        r = await admin.get(f"/api/whatsapp/qr/{org}")
        assert r.status_code == 200
        assert r.headers["Cache-Control"] == "no-store"
        body = r.json()
        assert body["qrCode"] == PAYLOAD
        assert body["status"] == "QR_CODE_PENDING"
        assert body["organizationId"] == str(org)
        assert datetime.fromisoformat(body["issuedAt"]).tzinfo is not None

        png = await admin.get(f"/api/whatsapp/qr/{org}", params={"format": "png"})
        assert png.status_code == 200
        assert png.headers["Content-Type"] == "image/png"
        image = Image.open(io.BytesIO(png.content))
        decoded = zxingcpp.read_barcodes(image)
        assert [code.text for code in decoded] == [body["qrCode"]]
        assert decoded[0].format == zxingcpp.BarcodeFormat.QRCode

        svg = await admin.get(f"/api/whatsapp/qr/{org}", params={"format": "SVG"})
        assert svg.status_code == 200
        assert svg.headers["Content-Type"].startswith("image/svg+xml")
        assert svg.text.lstrip().startswith("<svg")

        status = (await admin.get(f"/api/whatsapp/status/{org}")).json()
        assert status["status"] == "QR_CODE_PENDING"
        assert status["qrAvailable"] is True


async def test_a_rotated_qr_is_served_at_once(live_api: LiveApi) -> None:
    with trio.fail_after(30):
        org = await live_api.create_org()
        sock = live_api.socket_client()
        await sessions_repo.set_state(live_api.ctx.db, organization_id=org,
                                      state="QR_CODE_PENDING", qr_payload="2@first,a,b,c")
        first = (await sock.get(f"/api/whatsapp/qr/{org}")).json()
        await sessions_repo.set_state(live_api.ctx.db, organization_id=org,
                                      state="QR_CODE_PENDING", qr_payload="2@second,a,b,c")
        second = (await sock.get(f"/api/whatsapp/qr/{org}")).json()
        assert first["qrCode"] == "2@first,a,b,c"
        assert second["qrCode"] == "2@second,a,b,c"
        assert second["issuedAt"] >= first["issuedAt"]
        png = await sock.get(f"/api/whatsapp/qr/{org}?format=png")
        decoded = zxingcpp.read_barcodes(Image.open(io.BytesIO(png.content)))
        assert [c.text for c in decoded] == ["2@second,a,b,c"]


async def test_no_qr_when_not_waiting_for_a_scan(live_api: LiveApi) -> None:
    with trio.fail_after(30):
        org = await live_api.create_org()
        sock = live_api.socket_client()
        # Never connected: no session row at all.
        r = await sock.get(f"/api/whatsapp/qr/{org}")
        assert r.status_code == 200
        assert r.json() == {"qrCode": None, "organizationId": str(org),
                            "status": "DISCONNECTED", "issuedAt": None}
        r = await sock.get(f"/api/whatsapp/qr/{org}", params={"format": "png"})
        assert r.status_code == 409
        assert r.json()["error"]["code"] == "no_qr_code"
        assert "DISCONNECTED" in r.json()["error"]["message"]
        status = (await sock.get(f"/api/whatsapp/status/{org}")).json()
        assert status["status"] == "DISCONNECTED"
        assert status["qrAvailable"] is False

        await sessions_repo.set_state(live_api.ctx.db, organization_id=org, state="CONNECTED",
                                      phone_number="+996555123456", push_name="Issyk-Kul Tours")
        r = await sock.get(f"/api/whatsapp/qr/{org}")
        assert (r.status_code, r.json()["qrCode"], r.json()["status"]) == (200, None, "CONNECTED")
        for fmt in ("png", "svg"):
            r = await sock.get(f"/api/whatsapp/qr/{org}", params={"format": fmt})
            assert r.status_code == 409
            assert "CONNECTED" in r.json()["error"]["message"]
        status = (await sock.get(f"/api/whatsapp/status/{org}")).json()
        assert status["status"] == "CONNECTED"
        assert status["phoneNumber"] == "+996555123456"
        assert status["pushName"] == "Issyk-Kul Tours"
        assert status["lastConnectedAt"] is not None

        listing = (await sock.get("/api/whatsapp/status")).json()["organizations"]
        assert [(o["organizationId"], o["status"]) for o in listing] == [(str(org), "CONNECTED")]
