import pytest

from ivr.phone import is_withheld, mask, normalize

WITHHELD = [
    None,
    "",
    "   ",
    "Anonymous",
    "anonymous",
    "Restricted",
    "Unknown",
    "Private",
    "UNAVAILABLE",
    "+266696687",  # Twilio's ANONYMOUS placeholder
    "+7378742833",  # RESTRICTED; a possible Kazakh number, so only the list catches it
    "+86282452253",  # UNAVAILABLE; a possible Chinese number
    "+8656696",  # UNKNOWN
]


@pytest.mark.parametrize("raw", WITHHELD)
def test_withheld_callers_have_no_number(raw):
    assert is_withheld(raw)
    assert normalize(raw) is None


@pytest.mark.parametrize(
    "raw",
    ["client:alice", "12", "not a number", "1-800-FLOWERS", "+1 415 555 0100 ext 3", "++", "+"],
)
def test_junk_is_not_a_number_but_not_withheld_either(raw):
    assert normalize(raw) is None
    assert not is_withheld(raw)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+14155550100", "+14155550100"),
        ("(415) 555-0100", "+14155550100"),
        ("415.555.0100", "+14155550100"),
        ("1 415 555 0100", "+14155550100"),
        ("tel:+1-415-555-0100", "+14155550100"),
        ("sip:+14155550100@trunk.example.com", "+14155550100"),
        ("  +1 415 555 0100\n", "+14155550100"),
        ("+44 20 7946 0958", "+442079460958"),
        ("0044 20 7946 0958", "+442079460958"),
        ("011 44 20 7946 0958", "+442079460958"),
    ],
)
def test_human_formats_become_e164(raw, expected):
    assert normalize(raw) == expected


def test_national_numbers_are_read_in_the_default_region():
    assert normalize("020 7946 0958", default_region="GB") == "+442079460958"
    assert normalize("01 99 00 01 00", default_region="FR") == "+33199000100"


def test_impossible_length_is_rejected():
    assert normalize("+1 415 555 01") is None
    assert normalize("+1 415 555 0100 99") is None


def test_mask_keeps_country_code_and_last_two_digits():
    assert mask("+14155550100") == "+1\u2022\u2022\u2022\u2022\u2022\u2022\u2022\u202200"
    assert mask("+442079460958") == "+44" + "\u2022" * 8 + "58"


def test_mask_never_leaks_a_malformed_value():
    assert mask("Anonymous") == "withheld"
    assert mask(None) == "withheld"
    assert mask("call me at 4155550100") == "withheld"
