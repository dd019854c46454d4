from edged.urls import credentials, redact_text, redact_url, without_credentials


def test_redact_hides_password_keeps_user_host_path() -> None:
    url = "rtsp://admin:s3cr%40t@cam.local:554/Streaming/101?x=1"
    shown = redact_url(url)
    assert shown == "rtsp://admin:***@cam.local:554/Streaming/101?x=1"
    assert "s3cr" not in shown


def test_redact_leaves_urls_without_password_alone() -> None:
    for url in ("rtsp://cam/1", "/dev/video0", "clip.mp4", "rtsp://user@cam/1", "mqtt://[::1]:1883"):
        assert redact_url(url) == url


def test_redact_ipv6_host() -> None:
    assert redact_url("rtsp://u:p@[fe80::1]:8554/x") == "rtsp://u:***@[fe80::1]:8554/x"


def test_redact_text_masks_urls_inside_messages() -> None:
    text = "Could not open rtsp://u:hunter2@10.0.0.5/live and http://a:b@c/d; file.mp4 fine"
    shown = redact_text(text)
    assert "hunter2" not in shown
    assert ":b@" not in shown
    assert "rtsp://u:***@10.0.0.5/live" in shown


def test_credentials_are_percent_decoded() -> None:
    creds = credentials("mqtt://edged:p%40ss@broker:1883")
    assert (creds.username, creds.password) == ("edged", "p@ss")
    assert credentials("mqtt://broker").password is None


def test_without_credentials() -> None:
    assert without_credentials("rtsp://u:p@cam:554/a") == "rtsp://cam:554/a"
    assert without_credentials("rtsp://cam/a") == "rtsp://cam/a"
