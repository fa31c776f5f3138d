"""HTTP: Twilio's webhooks, Media Streams, the supervisors' dashboard and the API.

    app          `create_app`, the Flask application factory
    voice        Twilio's voice webhooks: requests in, engine events through, TwiML out
    signatures   X-Twilio-Signature checks and the URL Twilio signed
    twiml        engine actions -> TwiML
    media        the /voice/media WebSocket: live audio to vosk
    testcalls    calls placed from the dashboard, through the real engine
    users        who may log in to the dashboard
    dashboard/   the supervisors' dashboard blueprint
    server       `ivr serve`: gunicorn
"""
