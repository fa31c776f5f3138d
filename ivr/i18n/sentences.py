"""Every sentence the server says on a call, in English, the catalogues' source.

Callers hear these when a flow does not give its own words; agents hear the whisper.
Each is translated in ivr/i18n/locales/<lang>/LC_MESSAGES/messages.po. How to add one:
the docstring of ivr.i18n. Placeholders are {name}; {n} chooses a plural.
"""

from __future__ import annotations

from .catalogue import Message, Phrase, Sentence, Setting

# -- what each language chooses ------------------------------------------------------------

# Translators: the Twilio <Say> voice for each language tag this file serves, as
# "tag: voice" pairs separated by commas (voices: Twilio's text-to-speech docs). A flow
# without `voice:` speaks with the one listed for its language; unlisted tags get Twilio's
# default voice.
VOICE = Setting("voice", "en-US: Polly.Joanna-Neural, en-GB: Polly.Amy-Neural, "
                         "en-AU: Polly.Olivia-Neural, en-IN: Polly.Kajal-Neural")
# Translators: how the groups of a phone number are read back: "digits" (one by one:
# 4 1 5, 5 5 5) or "pairs" (a group of two digits as a number: 06 12 is "0 6, 12").
PHONE_DIGITS = Setting("phone number digits", "digits")

# -- words callers say ---------------------------------------------------------------------

# Translators: words and short phrases, separated by commas, that mean yes (a caller
# confirming). Lower case; accents do not matter.
YES_WORDS = Phrase("words meaning yes", "yes, yeah, yep, right, correct, sure, ok, okay, "
                                        "that's right, yes please, confirm, confirmed")
# Translators: words and short phrases, separated by commas, that mean no (or another one).
NO_WORDS = Phrase("words meaning no", "no, nope, wrong, not, incorrect, different, another")
# Translators: what a caller says to keep a callback already booked, separated by commas.
KEEP_WORDS = Phrase("words meaning keep it", "keep, keep it")
# Translators: what a caller says to cancel a callback already booked, separated by commas.
CANCEL_WORDS = Phrase("words meaning cancel it", "cancel, cancel it")
# Translators: what a caller on hold says to ask for a callback, separated by commas; the
# first is the one the offer tells them to say.
CALL_ME_BACK_WORDS = Phrase("words asking for a callback", "call me back, call back, callback")
# Translators: the post-call survey's score, 1 (worst) to 5 (best): words and short
# phrases, separated by commas, a caller may say for each score (the number itself
# first). Lower case; accents do not matter. Where phrases overlap the longest wins
# ("not good" before "good"), and an answer that names two scores is asked again.
SCORE_1_WORDS = Phrase("survey: words meaning 1 out of 5", "one, very bad, terrible, awful, horrible, "
                                                            "very poor, useless, the worst")
SCORE_2_WORDS = Phrase("survey: words meaning 2 out of 5", "two, bad, poor, not good, not great, "
                                                            "not very good, not really")
SCORE_3_WORDS = Phrase("survey: words meaning 3 out of 5", "three, okay, ok, average, so so, fine, "
                                                            "alright, not bad, fair, medium")
SCORE_4_WORDS = Phrase("survey: words meaning 4 out of 5", "four, good, pretty good, quite good, "
                                                            "satisfied, well")
SCORE_5_WORDS = Phrase("survey: words meaning 5 out of 5", "five, excellent, very good, perfect, "
                                                            "great, amazing, brilliant, outstanding, "
                                                            "fantastic, very satisfied, very well")
# Translators: how a caller may end a score ("four out of five"), separated by commas:
# taken out before the score is read, so "out of five" is not heard as a 5.
SCORE_OUT_OF = Phrase("survey: words after a score", "out of five, out of 5, on five, over five")

# -- pieces of sentences -------------------------------------------------------------------

KEY_STAR = Phrase("phone key", "star")
KEY_POUND = Phrase("phone key", "pound")
# Translators: a phone number from another country; {number} is its digits in groups.
FROM_ABROAD = Phrase("phone number", "plus {number}")

LESS_THAN_A_MINUTE = Phrase("duration", "less than a minute")
ABOUT_A_MINUTE = Phrase("duration", "about a minute")
ABOUT_MINUTES = Phrase("duration", "about {n} minute", "about {n} minutes")
ABOUT_HOURS = Phrase("duration", "about {n} hour", "about {n} hours")
# Translators: when something will happen, said after "we'll call you back".
IN_A_MOMENT = Phrase("when", "in a moment")
# Translators: {duration} is e.g. "about 12 minutes".
IN_DURATION = Phrase("when", "in {duration}")
AS_SOON_AS_FREE = Phrase("when", "as soon as an agent is free")
A_MOMENT_AGO = Phrase("how long ago", "a moment ago")
MINUTES_AGO = Phrase("how long ago", "{n} minute ago", "{n} minutes ago")

# Translators: a time of day on the hour. {hour} is 0-23, {hour12} 1-12, {am_pm} the
# word for before or after noon below.
TIME_ON_THE_HOUR = Phrase("time of day", "{hour12} {am_pm}")
# Translators: a time of day. {minute} has two digits ("05").
TIME = Phrase("time of day", "{hour12}:{minute} {am_pm}")
BEFORE_NOON = Phrase("time of day", "AM")
AFTER_NOON = Phrase("time of day", "PM")
# Translators: when the line opens again, said after "We open again". {time} is a time of day.
OPEN_NOW = Phrase("opening", "now")
OPEN_TODAY = Phrase("opening", "at {time}")
OPEN_TOMORROW = Phrase("opening", "tomorrow at {time}")
# Translators: {weekday} is the day's name ("Monday").
OPEN_WEEKDAY = Phrase("opening", "{weekday} at {time}")
# Translators: {date} is a day and date ("Monday, January 4").
OPEN_DATE = Phrase("opening", "{date} at {time}")

# -- menus and questions (ask) -------------------------------------------------------------

NOT_HEARD = Sentence("Sorry, I didn't hear anything.")
# Translators: said after words that matched no choice of a menu.
NOT_UNDERSTOOD = Sentence("Sorry, I didn't understand that.")
# Translators: said after a key that is not one of a menu's choices. {keys} is what the
# caller pressed ("7", "star").
NOT_A_CHOICE = Sentence("Sorry, {keys} isn't one of the choices.")
# Translators: one menu choice. {label} is the operator's name for it ("billing"), {keys}
# the key(s) to press.
MENU_CHOICE = Sentence("For {label}, press {keys}.")
# Translators: the caller's words were understood, but not surely. {label} names what the
# menu thinks they want: the choice's label ("billing"), else its intent's name.
CONFIRM_CHOICE = Sentence("I think you're calling about {label}. Is that right? Say yes or press 1. "
                          "Say no or press 2.")

# -- holding in a queue --------------------------------------------------------------------

# Translators: said on hold when an agent is free or about to be: the caller is answered next.
NEXT_IN_LINE = Sentence("You are next in line.")
# Translators: said on hold to the caller first in line while no agent is free (their wait is
# long, and a callback may be offered next): true without promising a quick answer.
ALL_BUSY_FIRST = Sentence("All our agents are busy right now. You'll be the first to be answered.")
# Translators: said on a later hold cycle when the caller's place and wait have not changed.
THANKS_FOR_HOLDING = Sentence("Thanks for holding.")
# Translators: {position} is a number, 2 or more.
POSITION = Sentence("You are number {position} in line.")
# Translators: {wait} is e.g. "about 12 minutes" or "less than a minute".
WAIT_IS = Sentence("Your estimated wait is {wait}.")

# -- asking the company's systems (request) -----------------------------------------------

# Translators: said while the server asks the company's own systems something for the
# caller (where their order is, whether there is an outage), when the answer is slow.
ONE_MOMENT = Sentence("One moment while I look that up.")
# Translators: said every few seconds after that, while the answer still has not come.
STILL_LOOKING = Sentence("Still looking, thank you for waiting.")

# -- the callback dialogue (a caller on hold asks to be called back) -----------------------

# Translators: {key} is the key's name ("1", "star"); {phrase} the first of the words
# asking for a callback.
CALLBACK_OFFER = Sentence("To keep your place in line and have us call you back when it's your "
                          "turn, press {key}, or say {phrase}.")
# Translators: the callback offer again, on a later hold cycle: shorter, the caller has heard
# the whole offer once. {key} and {phrase} as above.
CALLBACK_OFFER_AGAIN = Sentence("To be called back instead, press {key}, or say {phrase}.")
# Translators: {number} is a phone number read back in groups.
CONFIRM_NUMBER = Sentence("We'll call you back at {number}. To confirm, press 1. To use a different "
                          "number, press 2.")
ENTER_NUMBER = Sentence("Please enter the number we should call, with the area code, then press "
                        "the pound key.")
READ_BACK = Sentence("You entered {number}. To confirm, press 1. To enter it again, press 2.")
ASK_REASON = Sentence("After the tone, tell us in a few words what you're calling about, so the "
                      "agent is ready for you. Press the pound key when you're done.")
# Translators: {when} is e.g. "in about 12 minutes" or "tomorrow at 8 AM".
BOOKED = Sentence("Thank you. We'll call you back at {number} {when}, and you keep your place in "
                  "line. Goodbye.")
NOT_A_NUMBER = Sentence("Sorry, that isn't a number we can call.")
BACK_IN_LINE = Sentence("No problem. You're still in line.")
NO_CALLING_TIME = Sentence("Sorry, we can't call you back at {number} before this request would "
                           "expire, at this time of day where you are. You're still in line.")
# Translators: a caller who has a callback booked phones again. {queue} is the queue's name
# ("billing"), {when} e.g. "in about 12 minutes".
PENDING = Sentence("You already asked us to call you back about {queue}, and we'll call you "
                   "{when}. To keep that callback, press 1. To cancel it, press 2.")
KEPT = Sentence("Thanks. We'll call you back {when}. Goodbye.")
CANCELLED = Sentence("Your callback is cancelled.")

# -- the callback call (the built-in greeting, when the queue's callback flow is missing) --

CALLBACK_HELLO_NAME = Sentence("Hello {name}. This is the callback you asked for. Please hold while "
                               "we connect you.")
CALLBACK_HELLO = Sentence("Hello. This is the callback you asked for. Please hold while we connect "
                          "you.")
CALLBACK_MISSED = Sentence("Sorry, nobody could take the call just now. We'll call you back again "
                           "shortly.")

# -- transfers and what the agent hears first (the whisper) --------------------------------

NOBODY_AVAILABLE = Sentence("Sorry, nobody could take your call. Please try again later.")
# Translators: the whisper, heard by the agent before the caller. {caller} is one of the
# callers below.
WHISPER_FROM = Sentence("Call from {caller}.")
WHISPER_KNOWN = Phrase("whisper: caller", "a known caller")
# Translators: {name} is the caller's name, {customer} their customer number read digit by digit.
WHISPER_CUSTOMER = Phrase("whisper: caller", "{name}, customer {customer}")
WHISPER_UNKNOWN = Phrase("whisper: caller", "an unrecognised caller from {number}")
WHISPER_WITHHELD = Phrase("whisper: caller", "a caller with a withheld number")
# Translators: {intent} is the name of what the caller asked for ("billing").
WHISPER_ABOUT = Sentence("Calling about {intent}.")
# Translators: one thing the call learned: {name} is its name, {value} its value.
WHISPER_VALUE = Phrase("whisper: a value", "{name}: {value}.")
WHISPER_DEFAULT = Sentence("Incoming support call.")
WHISPER_AFTER_ERROR = Sentence("Transferred after an error in the phone menu.")

# -- the post-call survey (once the agent hangs up) ---------------------------------------

# Translators: the survey's first question, heard when the agent has hung up.
SURVEY_SCORE = Sentence("Before you go, one quick question. On a scale of 1 to 5, how well did we "
                        "solve your problem? Press or say a number, 5 being excellent.")
SURVEY_SCORE_AGAIN = Sentence("Please press a key from 1 to 5, 5 being excellent.")
SURVEY_SOLVED = Sentence("Did we solve your problem today? Say yes or press 1. Say no or press 2.")
SURVEY_COMMENT = Sentence("After the tone, tell us in a few words what we could do better. Press the "
                          "pound key when you're done.")
SURVEY_THANKS = Sentence("Thank you for your answers. Goodbye.")

# -- when something fails (the caller is never left in silence) ----------------------------

SOMETHING_WENT_WRONG = Sentence("We're sorry, something went wrong on our side.")
PUT_THROUGH = Sentence("Let me put you through to someone who can help.")
LEAVE_A_MESSAGE = Sentence("Please leave a message after the tone.")
MESSAGE_TAKEN = Sentence("Thank you, we have your message. Goodbye.")
NOBODY_LEAVE_A_MESSAGE = Sentence("Sorry, nobody could take your call. Please leave a message after "
                                  "the tone, and we will get back to you.")
TECHNICAL_DIFFICULTIES = Sentence("We're sorry, we're having technical difficulties.")
HOLD_FOR_SOMEONE = Sentence("Please hold while we connect you to someone who can help.")
NOBODY_GOODBYE = Sentence("Sorry, nobody could take your call. Please try again later. Goodbye.")
LEAVE_A_MESSAGE_CALL_BACK = Sentence("Please leave a message after the tone and we will call you back.")
WILL_CALL_BACK = Sentence("Thank you. We will call you back. Goodbye.")
CALL_BACK_SOON = Sentence("Sorry, we're having technical difficulties. We'll call you back soon.")
MISSING_CALL_ID = Sentence("Sorry, this request is missing its call id.")


def by_name() -> dict[str, Message]:
    """Every message by its name in lower case ("not_heard"), as a flow's `messages:` names it."""
    return {name.lower(): value for name, value in globals().items()
            if isinstance(value, (Sentence, Phrase, Setting)) and name.isupper()}
