"""What a running server holds outside its processes, and the wiring to reach it.

    embedded     the embedded Redis started when no REDIS_URL is set
    callstate    live call state in Redis, with the step log written atomically beside it
    twilio_api   the Twilio REST client (or a stand-in at TWILIO_API_BASE_URL)
    services     Redis, flows, directories, matchers and the SQL store, wired once per process
    recordings   the rq job that downloads, keeps and transcribes recordings
    worker       `ivr worker`: an rq worker with rq's scheduler
"""
