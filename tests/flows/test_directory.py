import itertools
import logging
import os
import time
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from ivr.flows.directory import (
    Caller,
    CsvDirectory,
    Directory,
    DirectoryError,
    SqlDirectory,
    open_directory,
    unknown_context,
)

SAMPLE = Path(__file__).resolve().parents[2] / "flows" / "customers.csv"
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"

HEADER = "phone,first_name,last_name,customer_id,plan\n"


def write(path: Path, text: str) -> Path:
    """Write and move the mtime forward, so a same-size rewrite is still a change."""
    path.write_text(text, encoding="utf-8")
    stamp = time.time() + 10 * next(_ticks)
    os.utime(path, (stamp, stamp))
    return path


_ticks = itertools.count(1)


# --- the sample file other parts of the project rely on ---


def test_sample_directory_knows_ada_and_grace():
    directory = CsvDirectory(SAMPLE)
    assert directory.warnings == []
    ada = directory.lookup("+14155550100")
    assert (ada.first_name, ada.last_name, ada.customer_id) == ("Ada", "Lovelace", "C-1001")
    grace = directory.lookup("+14155550101")
    assert grace.full_name == "Grace Hopper"
    assert grace.fields["plan"] == "business"
    assert len(directory) >= 8


# --- records and contexts ---


def test_human_formatted_numbers_in_the_file_match_twilio_numbers(tmp_path):
    path = write(
        tmp_path / "customers.csv",
        HEADER
        + "(415) 555-0100,Ada,Lovelace,C-1001,premium\n"
        + "+44 20 7946 0958,Tim,Berners-Lee,C-1005,business\n",
    )
    directory = CsvDirectory(path)
    assert directory.lookup("+14155550100").first_name == "Ada"
    assert directory.lookup("+442079460958").first_name == "Tim"
    assert directory.lookup("+14155550199") is None


def test_context_has_every_column_and_the_fixed_keys(tmp_path):
    path = write(tmp_path / "c.csv", HEADER + "+14155550100,Ada,Lovelace,C-1001,premium\n")
    context = CsvDirectory(path).lookup("+14155550100").as_context()
    assert context == {
        "known": True,
        "phone": "+14155550100",
        "first_name": "Ada",
        "last_name": "Lovelace",
        "customer_id": "C-1001",
        "full_name": "Ada Lovelace",
        "plan": "premium",
    }


def test_only_required_columns_give_empty_optional_fields(tmp_path):
    path = write(tmp_path / "c.csv", "phone,first_name\n4155550100,Ada\n")
    caller = CsvDirectory(path).lookup("+14155550100")
    assert caller == Caller("+14155550100", "Ada", fields={"phone": "4155550100", "first_name": "Ada"})
    assert caller.as_context()["full_name"] == "Ada"
    assert caller.as_context()["customer_id"] == ""


def test_unknown_context():
    assert unknown_context(None) == {
        "known": False,
        "phone": "",
        "first_name": "",
        "last_name": "",
        "customer_id": "",
        "full_name": "",
    }
    assert unknown_context("+14155550199")["phone"] == "+14155550199"


def test_find_by_typed_customer_id_ignores_case_and_spaces(tmp_path):
    path = write(
        tmp_path / "c.csv",
        HEADER + "+14155550100,Ada,Lovelace,C-1001,premium\n+14155550101,Grace,Hopper,C-1002,\n",
    )
    directory = CsvDirectory(path)
    assert directory.find("customer_id", " c-1002 ").first_name == "Grace"
    assert directory.find("Customer ID", "C-1001").first_name == "Ada"
    assert directory.find("phone", "(415) 555-0101").first_name == "Grace"
    assert directory.find("customer_id", "C-9999") is None
    # an empty answer must not match rows whose column is empty
    assert directory.find("plan", "") is None
    assert directory.find("no_such_column", "C-1001") is None


def test_header_names_are_forgiving(tmp_path):
    path = write(
        tmp_path / "c.csv",
        "\ufeffPhone, First Name ,Last-Name,Customer ID\n+14155550100,Ada,Lovelace,C-1001\n",
    )
    caller = CsvDirectory(path).lookup("+14155550100")
    assert (caller.first_name, caller.last_name, caller.customer_id) == ("Ada", "Lovelace", "C-1001")


def test_excel_semicolon_csv(tmp_path):
    path = write(tmp_path / "c.csv", "phone;first_name;last_name\n+14155550100;Ada;Lovelace\n")
    assert CsvDirectory(path).lookup("+14155550100").full_name == "Ada Lovelace"
    tabs = write(tmp_path / "t.csv", "phone\tfirst_name\tlast_name\n+14155550100\tAda\tLovelace\n")
    assert CsvDirectory(tabs).lookup("+14155550100").full_name == "Ada Lovelace"


def test_directories_satisfy_the_protocol(tmp_path):
    path = write(tmp_path / "c.csv", HEADER)
    assert isinstance(CsvDirectory(path), Directory)


# --- problems in the file ---


def test_missing_column_names_file_and_line_and_suggests(tmp_path):
    path = write(tmp_path / "customers.csv", "phone,firstname,last_name\n+14155550100,Ada,L\n")
    with pytest.raises(DirectoryError) as caught:
        CsvDirectory(path)
    error = caught.value
    assert error.line == 1
    assert error.path == path
    assert str(error) == (
        "customers.csv:1: missing required column 'first_name' (did you mean 'firstname'?)"
        " (found: phone, firstname, last_name)"
    )


def test_missing_column_without_a_close_match(tmp_path):
    path = write(tmp_path / "customers.csv", "phone,name\n")
    with pytest.raises(DirectoryError) as caught:
        CsvDirectory(path)
    assert str(caught.value) == ("customers.csv:1: missing required column 'first_name' (found: phone, name)")


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("", 1, "empty file"),
        ("phone,first_name,phone\n", 1, "'phone' appears twice"),
    ],
)
def test_broken_headers(tmp_path, text, line, words):
    path = write(tmp_path / "customers.csv", text)
    with pytest.raises(DirectoryError) as caught:
        CsvDirectory(path)
    assert caught.value.line == line
    assert words in str(caught.value)


def test_not_utf8_names_the_line(tmp_path):
    path = tmp_path / "customers.csv"
    path.write_bytes(HEADER.encode() + b"+14155550100,Ada,L,C-1,x\n+14155550101,Ren\xe9e,B,C-2,x\n")
    with pytest.raises(DirectoryError) as caught:
        CsvDirectory(path)
    assert caught.value.line == 3
    assert "CSV UTF-8" in str(caught.value)


def test_a_stray_quote_is_an_error_not_other_customers_in_one_name(tmp_path):
    path = write(tmp_path / "customers.csv", 'phone,first_name,last_name\n+14155550100,"Ada,Lovelace\n'
                 "+14155550101,Grace,Hopper\n+14155550102,Alan,Turing\n")
    with pytest.raises(DirectoryError) as caught:
        CsvDirectory(path)
    assert caught.value.line == 2
    assert "quote" in str(caught.value) and "never closed" in str(caught.value)


def test_missing_file(tmp_path):
    with pytest.raises(DirectoryError) as caught:
        CsvDirectory(tmp_path / "nope.csv")
    assert str(caught.value).startswith("nope.csv: cannot open")


def test_bad_rows_are_skipped_with_warnings_naming_the_line(tmp_path):
    path = write(
        tmp_path / "customers.csv",
        HEADER
        + '+14155550100,Ada,Lovelace,C-1001,"premium\nwith a note"\n'  # a record over 2 lines
        + "Anonymous,Nobody,,C-0,\n"
        + ",Blank,,C-00,\n"
        + "\n"
        + "+14155550101,Grace,Hopper,C-1002,business\n"
        + "(415) 555-0100,Ada,King,C-1001,premium\n",
    )
    directory = CsvDirectory(path)
    assert directory.warnings == [
        "customers.csv:4: cannot read phone number 'Anonymous'; row skipped",
        "customers.csv:5: no phone number; row skipped",
        "customers.csv:8: +14155550100 is also on customers.csv:2; this row wins",
    ]
    assert directory.lookup("+14155550100").last_name == "King"
    assert directory.lookup("+14155550101").first_name == "Grace"
    assert len(directory) == 2


# --- reloading ---


def test_reloads_when_the_file_changes(tmp_path):
    path = write(tmp_path / "c.csv", HEADER + "+14155550100,Ada,Lovelace,C-1001,premium\n")
    directory = CsvDirectory(path, check_interval=0)
    assert directory.lookup("+14155550101") is None
    write(path, HEADER + "+14155550100,Ada,King,C-1001,premium\n+14155550101,Grace,H,C-2,b\n")
    assert directory.lookup("+14155550101").first_name == "Grace"
    assert directory.lookup("+14155550100").last_name == "King"


def test_checks_the_file_at_most_once_per_interval(tmp_path):
    path = write(tmp_path / "c.csv", HEADER + "+14155550100,Ada,Lovelace,C-1001,premium\n")
    directory = CsvDirectory(path)  # default interval: one second
    write(path, HEADER + "+14155550101,Grace,Hopper,C-1002,business\n")
    assert directory.lookup("+14155550100") is not None
    assert directory.lookup("+14155550101") is None


def test_a_broken_reload_keeps_the_previous_data(tmp_path, caplog):
    path = write(tmp_path / "customers.csv", HEADER + "+14155550100,Ada,Lovelace,C-1001,p\n")
    directory = CsvDirectory(path, check_interval=0)
    write(path, "phone,frist_name\n+14155550101,Grace\n")
    with caplog.at_level(logging.ERROR, logger="ivr.callers"):
        assert directory.lookup("+14155550100").first_name == "Ada"
        assert directory.lookup("+14155550101") is None
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    # logged once, not once per call
    assert len(errors) == 1
    assert "customers.csv:1: missing required column 'first_name'" in errors[0]

    write(path, "phone,first_name\n+14155550101,Grace\n")
    assert directory.lookup("+14155550101").first_name == "Grace"
    assert directory.lookup("+14155550100") is None


def test_a_deleted_file_keeps_the_previous_data(tmp_path, caplog):
    path = write(tmp_path / "c.csv", HEADER + "+14155550100,Ada,Lovelace,C-1001,p\n")
    directory = CsvDirectory(path, check_interval=0)
    path.unlink()
    with caplog.at_level(logging.ERROR, logger="ivr.callers"):
        assert directory.lookup("+14155550100").first_name == "Ada"
    assert "cannot open" in caplog.text


# --- SQL ---


def make_table(engine: sa.Engine, name: str) -> sa.Table:
    metadata = sa.MetaData()
    table = sa.Table(
        name,
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("Phone", sa.String(40)),
        sa.Column("first_name", sa.String(40)),
        sa.Column("last_name", sa.String(40)),
        sa.Column("customer_id", sa.String(20)),
        sa.Column("credit", sa.Integer),
    )
    metadata.create_all(engine)
    with engine.begin() as connection:
        connection.execute(
            table.insert(),
            [
                dict(
                    id=1,
                    Phone="(415) 555-0100",
                    first_name="Ada",
                    last_name="Lovelace",
                    customer_id="C-1001",
                    credit=12,
                ),
                dict(
                    id=2,
                    Phone="+44 20 7946 0958",
                    first_name="Tim",
                    last_name=None,
                    customer_id="C-1005",
                    credit=None,
                ),
                dict(id=3, Phone="withheld", first_name="Nobody", last_name="", customer_id="C-0", credit=0),
            ],
        )
    return table


def check_sql_directory(engine: sa.Engine, name: str) -> None:
    table = make_table(engine, name)
    directory = SqlDirectory(engine, table=name, refresh_seconds=0)
    ada = directory.lookup("+14155550100")
    assert ada.as_context()["credit"] == "12"
    assert ada.full_name == "Ada Lovelace"
    tim = directory.lookup("+442079460958")
    assert tim.last_name == "" and tim.fields["credit"] == ""
    assert directory.find("customer_id", "c-1005") == tim
    assert directory.warnings == [f"{name} row 3: cannot read phone number 'withheld'; row skipped"]
    assert isinstance(directory, Directory)

    with engine.begin() as connection:
        connection.execute(
            table.insert(),
            [dict(id=4, Phone="415-555-0101", first_name="Grace", customer_id="C-1002")],
        )
    assert directory.lookup("+14155550101").first_name == "Grace"

    # the table disappears: keep serving what we had
    table.drop(engine)
    assert directory.lookup("+14155550100").first_name == "Ada"


def test_sql_directory_on_sqlite(tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'crm.db'}")
    check_sql_directory(engine, "customers")


def test_sql_directory_on_postgresql():
    engine = sa.create_engine(PG_URL)
    try:
        engine.connect().close()
    except sa.exc.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable at {PG_URL}: {exc.orig}")
    name = f"customers_{uuid.uuid4().hex[:10]}"
    try:
        check_sql_directory(engine, name)
    finally:
        sa.Table(name, sa.MetaData()).drop(engine, checkfirst=True)
        engine.dispose()


def test_sql_directory_refreshes_only_after_the_interval(tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'crm.db'}")
    table = make_table(engine, "customers")
    directory = SqlDirectory(engine)  # default: every 60 seconds
    with engine.begin() as connection:
        connection.execute(table.insert(), [dict(id=4, Phone="4155550101", first_name="Grace")])
    assert directory.lookup("+14155550101") is None
    directory.refresh()
    assert directory.lookup("+14155550101").first_name == "Grace"


def test_sql_missing_table_suggests_the_close_one(tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'crm.db'}")
    make_table(engine, "customers")
    with pytest.raises(DirectoryError) as caught:
        SqlDirectory(engine, table="customer")
    assert "table 'customer' not found (did you mean 'customers'?)" in str(caught.value)


def test_sql_missing_column(tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'crm.db'}")
    with engine.begin() as connection:
        connection.execute(sa.text("CREATE TABLE people (phone TEXT, given_name TEXT)"))
    with pytest.raises(DirectoryError) as caught:
        SqlDirectory(engine, table="people")
    assert "missing required column 'first_name' (found: phone, given_name)" in str(caught.value)


# --- opening a directory from a flow ---


def test_open_csv_relative_to_the_flow_folder(tmp_path, monkeypatch):
    write(tmp_path / "customers.csv", HEADER + "+14155550100,Ada,Lovelace,C-1001,p\n")
    monkeypatch.chdir("/")
    directory = open_directory("customers.csv", tmp_path)
    assert directory.lookup("+14155550100").first_name == "Ada"


def test_open_sqlite_relative_to_the_flow_folder(tmp_path, monkeypatch):
    make_table(sa.create_engine(f"sqlite:///{tmp_path / 'crm.db'}"), "clients")
    monkeypatch.chdir("/")
    directory = open_directory("sqlite:///crm.db#clients", tmp_path)
    assert directory.lookup("+14155550100").first_name == "Ada"


def test_a_sql_directory_opens_no_connection_across_a_fork(tmp_path):
    """`ivr serve` loads flows in gunicorn's master and forks the workers: a SQL directory's
    connection must be closed first (each worker opens its own) and the rows still served."""
    from ivr.flows.registry import FlowRegistry

    make_table(sa.create_engine(f"sqlite:///{tmp_path / 'crm.db'}"), "clients")
    (tmp_path / "line.yaml").write_text(
        "id: line\ndirectory: sqlite:///crm.db#clients\nnodes:\n  bye: {hangup: Bye.}\n")
    registry = FlowRegistry(tmp_path)
    directory = registry.directory(registry.get("line"))
    assert directory.engine.pool.checkedin() == 1  # the connection that read the rows
    registry.close_connections()
    assert directory.engine.pool.checkedin() == 0
    assert directory.lookup("+14155550100").first_name == "Ada"


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("sqlite:///crm.db", "add the table name after '#'"),
        ("customers.xlsx", "unknown directory; use a .csv file"),
        ("nosuchdb://x/y#t", "cannot use database URL"),
    ],
)
def test_open_rejects_what_it_cannot_use(tmp_path, spec, words):
    with pytest.raises(DirectoryError) as caught:
        open_directory(spec, tmp_path)
    assert words in str(caught.value)


@pytest.mark.parametrize(
    ("header", "suggestion"),
    [
        ("phone,frist_name", "did you mean 'frist_name'?"),
        ("phone_number,first_name", "missing required column 'phone' (did you mean 'phone_number'?)"),
        ("mobile phone,first_name", "did you mean 'mobile_phone'?"),
    ],
)
def test_misspelt_columns_get_a_suggestion(tmp_path, header, suggestion):
    path = write(tmp_path / "customers.csv", header + "\n")
    with pytest.raises(DirectoryError) as caught:
        CsvDirectory(path)
    assert suggestion in str(caught.value)
