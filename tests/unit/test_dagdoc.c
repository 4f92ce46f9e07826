/*  test_dagdoc.c - unit tests for dq_dagdoc, the DAG document parser.

    Valid documents of every shape (local and existing-job dependencies,
    on_failure policies, every job option, the three payload forms), every
    error message with where it points, base64 edge cases, payload JSON text
    (compact, order kept, reals in shortest form), limits, and a
    100,000-job document.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "dq_dagdoc.h"

static dq_dagdoc_t *
s_parse (const char *json)
{
    char err [DQ_DAGDOC_ERR_SIZE];
    dq_dagdoc_t *doc = dq_dagdoc_parse (json, strlen (json), err, sizeof err);
    if (!doc)
        print_error ("unexpected parse error: %s\n", err);
    assert_non_null (doc);
    return doc;
}

//  Parse must fail with exactly the expected message.
static void
s_expect_error (const char *json, const char *expected)
{
    char err [DQ_DAGDOC_ERR_SIZE];
    dq_dagdoc_t *doc = dq_dagdoc_parse (json, strlen (json), err, sizeof err);
    if (doc)
        dq_dagdoc_destroy (&doc);
    assert_null (doc);
    assert_string_equal (err, expected);
}

//  Parse must fail with a message containing fragment.
static void
s_expect_error_has (const char *json, const char *fragment)
{
    char err [DQ_DAGDOC_ERR_SIZE];
    dq_dagdoc_t *doc = dq_dagdoc_parse (json, strlen (json), err, sizeof err);
    if (doc)
        dq_dagdoc_destroy (&doc);
    assert_null (doc);
    if (!strstr (err, fragment))
        print_error ("message '%s' lacks '%s'\n", err, fragment);
    assert_non_null (strstr (err, fragment));
}

static void
s_assert_payload (const dq_jobspec_t *job, const char *expected)
{
    assert_int_equal (job->payload_size, strlen (expected));
    assert_memory_equal (job->payload, expected, job->payload_size);
}

static void
test_dagdoc_example_from_issue (void **state)
{
    (void) state;
    dq_dagdoc_t *doc = s_parse (
        "{\"name\": \"photo-42\",\n"
        " \"jobs\": [\n"
        "   {\"id\": \"upload\", \"type\": \"store\",  \"payload\": {\"path\": \"a.jpg\"}},\n"
        "   {\"id\": \"faces\",  \"type\": \"faces\",  \"depends_on\": [\"upload\"]},\n"
        "   {\"id\": \"ocr\",    \"type\": \"ocr\",    \"depends_on\": [\"upload\"], \"attempts\": 5},\n"
        "   {\"id\": \"index\",  \"type\": \"index\",  \"depends_on\": [\"faces\", \"ocr\"]}\n"
        " ]}");
    assert_string_equal (dq_dagdoc_name (doc), "photo-42");
    assert_null (dq_dagdoc_key (doc));
    assert_int_equal (dq_dagdoc_njobs (doc), 4);
    const dq_jobspec_t *jobs = dq_dagdoc_jobs (doc);
    assert_string_equal (jobs [0].name, "upload");
    assert_string_equal (jobs [0].type, "store");
    s_assert_payload (&jobs [0], "{\"path\":\"a.jpg\"}");
    assert_int_equal (jobs [0].ndeps, 0);
    assert_int_equal (jobs [1].ndeps, 1);
    assert_int_equal (jobs [1].deps [0].idx, 0);
    assert_null (jobs [1].deps [0].id);
    assert_false (jobs [1].deps [0].run_on_failure);
    assert_int_equal (jobs [2].attempts, 5);
    assert_int_equal (jobs [3].ndeps, 2);
    assert_int_equal (jobs [3].deps [0].idx, 1);
    assert_int_equal (jobs [3].deps [1].idx, 2);
    assert_null (jobs [3].payload);
    assert_int_equal (jobs [3].payload_size, 0);
    assert_string_equal (dq_dagdoc_job_id (doc, 3), "index");
    assert_null (dq_dagdoc_job_id (doc, 4));
    dq_dagdoc_destroy (&doc);
    assert_null (doc);
    dq_dagdoc_destroy (&doc);       //  harmless twice
    dq_dagdoc_destroy (NULL);
}

static void
test_dagdoc_all_options (void **state)
{
    (void) state;
    dq_dagdoc_t *doc = s_parse (
        "{\"key\": \"batch-7\", \"jobs\": [\n"
        " {\"id\": \"a\", \"type\": \"x.y:z-1_2\", \"priority\": -7, \"attempts\": 1,\n"
        "  \"timeout\": 1.5, \"delay\": 2, \"key\": \"job-a\",\n"
        "  \"content_type\": \"text/plain\", \"payload_text\": \"hello\\nworld\"},\n"
        " {\"id\": \"b\", \"type\": \"t\", \"priority\": 2147483647, \"timeout\": 0.0001,\n"
        "  \"delay\": 0.25, \"payload_base64\": \"AAEC/w==\"},\n"
        " {\"id\": \"c\", \"type\": \"t\", \"timeout\": 0, \"delay\": 0,\n"
        "  \"depends_on\": [{\"id\": \"a\", \"on_failure\": \"run\"},\n"
        "                  {\"id\": \"b\", \"on_failure\": \"skip\"},\n"
        "                  {\"id\": \"b7f3a-42\"}, \"b7f3a-43\"]}\n"
        "]}");
    assert_string_equal (dq_dagdoc_name (doc), "");
    assert_string_equal (dq_dagdoc_key (doc), "batch-7");
    const dq_jobspec_t *j = dq_dagdoc_jobs (doc);
    assert_string_equal (j [0].type, "x.y:z-1_2");
    assert_int_equal (j [0].priority, -7);
    assert_int_equal (j [0].attempts, 1);
    assert_int_equal (j [0].timeout_ms, 1500);
    assert_int_equal (j [0].delay_ms, 2000);
    assert_string_equal (j [0].key, "job-a");
    assert_string_equal (j [0].content_type, "text/plain");
    s_assert_payload (&j [0], "hello\nworld");
    assert_int_equal (j [1].priority, INT32_MAX);
    assert_int_equal (j [1].timeout_ms, 1);        //  positive rounds up to 1 ms
    assert_int_equal (j [1].delay_ms, 250);
    assert_int_equal (j [1].attempts, 0);          //  absent: broker default
    assert_int_equal (j [1].payload_size, 4);
    assert_memory_equal (j [1].payload, "\x00\x01\x02\xff", 4);
    assert_null (j [1].key);
    assert_null (j [1].content_type);
    assert_int_equal (j [2].timeout_ms, 0);
    assert_int_equal (j [2].ndeps, 4);
    assert_int_equal (j [2].deps [0].idx, 0);
    assert_true (j [2].deps [0].run_on_failure);
    assert_int_equal (j [2].deps [1].idx, 1);
    assert_false (j [2].deps [1].run_on_failure);
    assert_int_equal (j [2].deps [2].idx, -1);
    assert_string_equal (j [2].deps [2].id, "b7f3a-42");
    assert_int_equal (j [2].deps [3].idx, -1);
    assert_string_equal (j [2].deps [3].id, "b7f3a-43");
    dq_dagdoc_destroy (&doc);
}

//  A local id that looks like a job id resolves locally; order in the
//  document does not matter (a dependency may point forward).
static void
test_dagdoc_local_wins_and_forward_refs (void **state)
{
    (void) state;
    dq_dagdoc_t *doc = s_parse (
        "{\"name\": \"\", \"jobs\": [\n"
        " {\"id\": \"last\", \"type\": \"t\", \"depends_on\": [\"b7f3a-1\"]},\n"
        " {\"id\": \"b7f3a-1\", \"type\": \"t\"}]}");
    const dq_jobspec_t *j = dq_dagdoc_jobs (doc);
    assert_int_equal (j [0].deps [0].idx, 1);
    assert_null (j [0].deps [0].id);
    assert_string_equal (dq_dagdoc_name (doc), "");
    dq_dagdoc_destroy (&doc);
}

static void
test_dagdoc_payload_json_text (void **state)
{
    (void) state;
    dq_dagdoc_t *doc = s_parse (
        "{\"jobs\": [\n"
        " {\"id\": \"o\", \"type\": \"t\", \"payload\": "
        "   {\"z\": 1, \"a\": [1, 2.5, 0.1, 1e300, -0.0, 3.0, true, false, null],"
        "    \"s\": \"q\\\"\\\\\\n\\t\\u0001\\u00e9/\", \"e\": {}, \"l\": []}},\n"
        " {\"id\": \"s\", \"type\": \"t\", \"payload\": \"just text\"},\n"
        " {\"id\": \"n\", \"type\": \"t\", \"payload\": 42},\n"
        " {\"id\": \"f\", \"type\": \"t\", \"payload\": 0.30000000000000004},\n"
        " {\"id\": \"z\", \"type\": \"t\", \"payload\": null},\n"
        " {\"id\": \"b\", \"type\": \"t\", \"payload\": [true]},\n"
        " {\"id\": \"e\", \"type\": \"t\", \"payload_text\": \"\"}\n"
        "]}");
    const dq_jobspec_t *j = dq_dagdoc_jobs (doc);
    s_assert_payload (&j [0],
        "{\"z\":1,\"a\":[1,2.5,0.1,1e+300,-0.0,3.0,true,false,null],"
        "\"s\":\"q\\\"\\\\\\n\\t\\u0001\xc3\xa9/\",\"e\":{},\"l\":[]}");
    s_assert_payload (&j [1], "\"just text\"");
    s_assert_payload (&j [2], "42");
    s_assert_payload (&j [3], "0.30000000000000004");
    s_assert_payload (&j [4], "null");
    s_assert_payload (&j [5], "[true]");
    assert_int_equal (j [6].payload_size, 0);
    dq_dagdoc_destroy (&doc);
}

static void
s_b64 (const char *b64, const void *expected, size_t size)
{
    char json [512];
    snprintf (json, sizeof json,
              "{\"jobs\": [{\"id\": \"a\", \"type\": \"t\", \"payload_base64\": \"%s\"}]}",
              b64);
    dq_dagdoc_t *doc = s_parse (json);
    const dq_jobspec_t *j = dq_dagdoc_jobs (doc);
    assert_int_equal (j [0].payload_size, size);
    if (size)
        assert_memory_equal (j [0].payload, expected, size);
    dq_dagdoc_destroy (&doc);
}

static void
s_b64_bad (const char *b64, const char *fragment)
{
    char json [512];
    snprintf (json, sizeof json,
              "{\"jobs\": [{\"id\": \"a\", \"type\": \"t\", \"payload_base64\": \"%s\"}]}",
              b64);
    s_expect_error_has (json, fragment);
}

static void
test_dagdoc_base64 (void **state)
{
    (void) state;
    s_b64 ("", "", 0);
    s_b64 ("Zg==", "f", 1);
    s_b64 ("Zg", "f", 1);
    s_b64 ("Zm8=", "fo", 2);
    s_b64 ("Zm8", "fo", 2);
    s_b64 ("Zm9v", "foo", 3);
    s_b64 ("Zm9vYmFy", "foobar", 6);
    s_b64 ("+/+/", "\xfb\xff\xbf", 3);
    s_b64 ("AAAA", "\0\0\0", 3);
    s_b64_bad ("Zm9v!", "jobs[0] (id 'a'): 'payload_base64' is not valid base64: "
               "character '!' at offset 4");
    s_b64_bad ("Z", "its length (1) is impossible");
    s_b64_bad ("Zm9vY", "its length (5) is impossible");
    s_b64_bad ("Zg=", "its length (3) is impossible");
    s_b64_bad ("Zm9=v", "'=' padding at offset 3 is not at the end");
    s_b64_bad ("Zg===", "'=' padding at offset 2 is not at the end");
    s_b64_bad ("Zm 9v", "character ' ' at offset 2");
    s_b64_bad ("Zm9v\\n", "byte 0x0a at offset 4");
    s_b64_bad ("Zm-_", "character '-' at offset 2");
    s_expect_error ("{\"jobs\": [{\"id\": \"a\", \"type\": \"t\", \"payload_base64\": 5}]}",
                    "jobs[0] (id 'a'): 'payload_base64' must be a string, not an integer");
}

static void
test_dagdoc_top_level_errors (void **state)
{
    (void) state;
    s_expect_error ("", "the document is empty");
    s_expect_error ("  \n ", "the document is empty");
    s_expect_error ("{\"jobs\": [", "invalid JSON at line 1, column 11: unexpected end of input");
    s_expect_error ("{\"jobs\": []}\n{}", "invalid JSON at line 2, column 1: end of file expected");
    s_expect_error ("{\"name\": \"a\", \"name\": \"b\", \"jobs\": []}",
                    "invalid JSON at line 1, column 15: duplicate object key");
    s_expect_error ("{\"jobs\": [{\"id\": \"a\", \"type\": \"t\"} {\"id\": \"b\"}]}",
                    "invalid JSON at line 1, column 36: ',' or ']' expected");
    s_expect_error ("{\"jobs\": [{\"id\": [\"a\"}]}",
                    "invalid JSON at line 1, column 22: unexpected '}'");
    s_expect_error ("{\"jobs\": [{\"id\": \"a\", \"type\": \"t\"}]} x",
                    "invalid JSON at line 1, column 38: end of file expected");
    s_expect_error ("{\"jobs\" [] }", "invalid JSON at line 1, column 9: ':' expected");
    s_expect_error ("{\"jobs\": [] x", "invalid JSON at line 1, column 13: ',' or '}' expected");
    s_expect_error ("{jobs: []}", "invalid JSON at line 1, column 2: string or '}' expected");
    s_expect_error ("{\"jobs\": [], }", "invalid JSON at line 1, column 14: string or '}' expected");
    s_expect_error ("{\"jobs\": [\"unterminated]}", "invalid JSON at line 1, column 26: "
                    "unexpected end of input in a string");
    s_expect_error ("{\"jobs\": [,]}", "invalid JSON at line 1, column 11: a value was expected");
    s_expect_error ("{\"jobs\": }", "invalid JSON at line 1, column 10: unexpected '}'");
    //  Errors inside a job come from jansson, placed in the whole document.
    s_expect_error_has ("{\"jobs\": [\n  {\"id\": \"a\", \"type\": \"t\"},\n"
                        "  {\"id\": \"b\", \"type\": \"t\",}\n]}",
                        "invalid JSON at line 3, column 27: string or '}' expected");
    s_expect_error_has ("{\"jobs\": [{\"id\": \"a\", \"id\": \"b\", \"type\": \"t\"}]}",
                        "duplicate object key");
    s_expect_error_has ("{\"jobs\": [{\"id\": \"a\", \"type\": tru}]}", "invalid JSON at line 1");
    s_expect_error_has ("{\"name\": nul, \"jobs\": []}", "invalid JSON at line 1");
    s_expect_error_has ("{\"jobs\": [{\"id\": \"a\\u0000b\", \"type\": \"t\"}]}",
                        "invalid JSON");
    s_expect_error ("\"just a string\"",
                    "the document must be a JSON object {\"name\": ..., \"jobs\": [...]}, "
                    "not a string");
    s_expect_error ("42", "the document must be a JSON object {\"name\": ..., \"jobs\": [...]}, "
                    "not an integer");
    s_expect_error ("{}", "'jobs' is required");
    s_expect_error ("{\"jobs\": \"x\"}", "'jobs' must be an array, not a string");
    s_expect_error ("{\"jobs\": [ ] }", "'jobs' is empty: a DAG needs at least one job");
    s_expect_error ("{\"job\\u0073\": [1]}", "jobs[0]: must be an object, not an integer");
    s_expect_error ("{\"jobs\\u0000\": []}", "invalid JSON at line 1, column 13: "
                    "\\u0000 is not allowed without JSON_ALLOW_NUL near '\"jobs\\u0000\"'");
    s_expect_error ("[1, 2", "invalid JSON at line 1, column 6: unexpected end of input");
    s_expect_error ("[1, 2]",
                    "the document must be a JSON object {\"name\": ..., \"jobs\": [...]}, "
                    "not an array");
    s_expect_error ("{\"nmae\": \"x\", \"jobs\": []}",
                    "unknown field 'nmae' at the top level (expected name, key, jobs)");
    s_expect_error ("{\"name\": 5, \"jobs\": []}", "'name' must be a string, not an integer");
    s_expect_error ("{\"key\": \"\", \"jobs\": []}", "'key' must not be empty");
    s_expect_error ("{\"key\": null, \"jobs\": []}", "'key' must be a string, not null");
    s_expect_error ("{\"name\": \"a\\u0007b\", \"jobs\": []}",
                    "'name' must not contain control characters");
    s_expect_error ("{\"name\": \"x\"}", "'jobs' is required");
    s_expect_error ("{\"jobs\": {}}", "'jobs' must be an array, not an object");
    s_expect_error ("{\"jobs\": []}", "'jobs' is empty: a DAG needs at least one job");
    //  A key of 256 bytes is fine, 257 is not.
    char json [1024];
    snprintf (json, sizeof json, "{\"key\": \"%0256d\", \"jobs\": [{\"id\": \"a\", \"type\": \"t\"}]}", 0);
    dq_dagdoc_t *doc = s_parse (json);
    assert_int_equal (strlen (dq_dagdoc_key (doc)), 256);
    dq_dagdoc_destroy (&doc);
    snprintf (json, sizeof json, "{\"key\": \"%0257d\", \"jobs\": []}", 0);
    s_expect_error (json, "'key' is 257 bytes, over the limit of 256");
    //  NULL input and err may be NULL.
    char err [DQ_DAGDOC_ERR_SIZE];
    assert_null (dq_dagdoc_parse (NULL, 0, err, sizeof err));
    assert_string_equal (err, "no document");
    assert_null (dq_dagdoc_parse ("{", 1, NULL, 0));
    //  The input need not be NUL-terminated: only len bytes are read.
    const char *text = "{\"jobs\": [{\"id\": \"a\", \"type\": \"t\"}]}garbage";
    doc = dq_dagdoc_parse (text, strlen (text) - 7, err, sizeof err);
    assert_non_null (doc);
    dq_dagdoc_destroy (&doc);
}

static void
test_dagdoc_job_errors (void **state)
{
    (void) state;
    s_expect_error ("{\"jobs\": [\"a\"]}", "jobs[0]: must be an object, not a string");
    s_expect_error ("{\"jobs\": [{\"id\": \"a\", \"type\": \"t\"}, {\"type\": \"t\"}]}",
                    "jobs[1]: 'id' is required");
    s_expect_error ("{\"jobs\": [{\"id\": 7, \"type\": \"t\"}]}",
                    "jobs[0]: 'id' must be a string, not an integer");
    s_expect_error ("{\"jobs\": [{\"id\": \"\", \"type\": \"t\"}]}",
                    "jobs[0]: 'id' must not be empty");
    s_expect_error ("{\"jobs\": [{\"id\": \"a\\nb\", \"type\": \"t\"}]}",
                    "jobs[0]: 'id' must not contain control characters");
    s_expect_error ("{\"jobs\": [{\"id\": \"a\", \"type\": \"t\"}, {\"id\": \"b\", \"type\": \"t\"},"
                    " {\"id\": \"a\", \"type\": \"t\"}]}",
                    "jobs[2] (id 'a'): duplicate id (also jobs[0])");
    s_expect_error ("{\"jobs\": [{\"id\": \"a\", \"type\": \"t\", \"depends\": [\"x\"]}]}",
                    "jobs[0] (id 'a'): unknown field 'depends' (expected id, type, payload, "
                    "payload_text, payload_base64, priority, attempts, timeout, delay, key, "
                    "content_type, depends_on)");
    s_expect_error ("{\"jobs\": [{\"id\": \"a\", \"type\": \"t\"}, {\"id\": \"b\", \"type\": \"t\"},"
                    " {\"id\": \"c\"}]}",
                    "jobs[2] (id 'c'): 'type' is required");
    s_expect_error ("{\"jobs\": [{\"id\": \"a\", \"type\": [\"t\"]}]}",
                    "jobs[0] (id 'a'): 'type' must be a string, not an array");
    s_expect_error ("{\"jobs\": [{\"id\": \"a\", \"type\": \"no spaces\"}]}",
                    "jobs[0] (id 'a'): 'type' must be 1 to 128 characters from "
                    "[A-Za-z0-9_.:-], not 'no spaces'");
    s_expect_error_has ("{\"jobs\": [{\"id\": \"a\", \"type\": \"\"}]}", "'type' must be 1 to 128");
    s_expect_error ("{\"jobs\": [{\"id\": \"a\", \"type\": \"t\", \"payload\": 1, "
                    "\"payload_text\": \"x\"}]}",
                    "jobs[0] (id 'a'): give at most one of 'payload', 'payload_text' and "
                    "'payload_base64'");
    s_expect_error ("{\"jobs\": [{\"id\": \"a\", \"type\": \"t\", \"payload_text\": {}}]}",
                    "jobs[0] (id 'a'): 'payload_text' must be a string, not an object");
    s_expect_error ("{\"jobs\": [{\"id\": \"a\", \"type\": \"t\", \"priority\": 1.5}]}",
                    "jobs[0] (id 'a'): 'priority' must be an integer from -2147483648 to "
                    "2147483647");
    s_expect_error_has ("{\"jobs\": [{\"id\": \"a\", \"type\": \"t\", \"priority\": 2147483648}]}",
                        "'priority' must be an integer");
    s_expect_error_has ("{\"jobs\": [{\"id\": \"a\", \"type\": \"t\", \"priority\": \"1\"}]}",
                        "'priority' must be an integer");
    s_expect_error ("{\"jobs\": [{\"id\": \"a\", \"type\": \"t\", \"attempts\": 0}]}",
                    "jobs[0] (id 'a'): 'attempts' must be an integer from 1 to 1000000");
    s_expect_error_has ("{\"jobs\": [{\"id\": \"a\", \"type\": \"t\", \"attempts\": true}]}",
                        "'attempts' must be an integer");
    s_expect_error ("{\"jobs\": [{\"id\": \"a\", \"type\": \"t\", \"timeout\": -1}]}",
                    "jobs[0] (id 'a'): 'timeout' must be from 0 to 4294967 seconds");
    s_expect_error ("{\"jobs\": [{\"id\": \"a\", \"type\": \"t\", \"timeout\": \"5s\"}]}",
                    "jobs[0] (id 'a'): 'timeout' must be a number of seconds, not a string");
    s_expect_error ("{\"jobs\": [{\"id\": \"a\", \"type\": \"t\", \"delay\": 1e10}]}",
                    "jobs[0] (id 'a'): 'delay' must be from 0 to 315360000 seconds");
    s_expect_error ("{\"jobs\": [{\"id\": \"a\", \"type\": \"t\", \"key\": 1}]}",
                    "jobs[0] (id 'a'): 'key' must be a string, not an integer");
    s_expect_error ("{\"jobs\": [{\"id\": \"a\", \"type\": \"t\", \"content_type\": \"\"}]}",
                    "jobs[0] (id 'a'): 'content_type' must not be empty");
}

static void
test_dagdoc_dependency_errors (void **state)
{
    (void) state;
    //  The brief's example, word for word.
    s_expect_error ("{\"jobs\": [{\"id\": \"upload\", \"type\": \"t\"},"
                    " {\"id\": \"faces\", \"type\": \"t\"},"
                    " {\"id\": \"x\", \"type\": \"t\"},"
                    " {\"id\": \"ocr\", \"type\": \"t\", \"depends_on\": [\"faces\", \"uplod\"]}]}",
                    "jobs[3] (id 'ocr'): depends_on[1]: unknown job 'uplod' \xe2\x80\x94 "
                    "not in this document and not a job id");
    s_expect_error ("{\"jobs\": [{\"id\": \"a\", \"type\": \"t\", \"depends_on\": [\"a\"]}]}",
                    "jobs[0] (id 'a'): depends_on[0]: a job cannot depend on itself");
    s_expect_error ("{\"jobs\": [{\"id\": \"a\", \"type\": \"t\"},"
                    " {\"id\": \"b\", \"type\": \"t\", \"depends_on\": [\"a\", {\"id\": \"a\"}]}]}",
                    "jobs[1] (id 'b'): depends_on[1]: 'a' is already listed (depends_on[0])");
    s_expect_error ("{\"jobs\": [{\"id\": \"b\", \"type\": \"t\", \"depends_on\": "
                    "[\"x-1\", \"x-2\", \"x-3\", \"x-2\", \"x-1\"]}]}",
                    "jobs[0] (id 'b'): depends_on[3]: 'x-2' is already listed (depends_on[1])");
    s_expect_error ("{\"jobs\": [{\"id\": \"a\", \"type\": \"t\", \"depends_on\": \"b\"}]}",
                    "jobs[0] (id 'a'): 'depends_on' must be an array, not a string");
    s_expect_error ("{\"jobs\": [{\"id\": \"a\", \"type\": \"t\", \"depends_on\": [3]}]}",
                    "jobs[0] (id 'a'): depends_on[0]: must be a job id (string) or an "
                    "object {\"id\": ..., \"on_failure\": \"run\"|\"skip\"}, not an integer");
    s_expect_error ("{\"jobs\": [{\"id\": \"a\", \"type\": \"t\", \"depends_on\": [{}]}]}",
                    "jobs[0] (id 'a'): depends_on[0]: 'id' is required");
    s_expect_error ("{\"jobs\": [{\"id\": \"a\", \"type\": \"t\", \"depends_on\": "
                    "[{\"id\": \"x-1\", \"on_fail\": \"run\"}]}]}",
                    "jobs[0] (id 'a'): depends_on[0]: unknown field 'on_fail' (expected "
                    "id, on_failure)");
    s_expect_error ("{\"jobs\": [{\"id\": \"a\", \"type\": \"t\", \"depends_on\": "
                    "[{\"id\": \"x-1\", \"on_failure\": \"ignore\"}]}]}",
                    "jobs[0] (id 'a'): depends_on[0]: 'on_failure' must be \"run\" or \"skip\"");
    s_expect_error ("{\"jobs\": [{\"id\": \"a\", \"type\": \"t\", \"depends_on\": "
                    "[{\"id\": 5}]}]}",
                    "jobs[0] (id 'a'): depends_on[0]: 'id' must be a string, not an integer");
    s_expect_error ("{\"jobs\": [{\"id\": \"a\", \"type\": \"t\", \"depends_on\": [\"\"]}]}",
                    "jobs[0] (id 'a'): depends_on[0]: a job id must be 1 to 256 bytes");
    //  DAG ids and malformed ids are not job ids.
    s_expect_error_has ("{\"jobs\": [{\"id\": \"a\", \"type\": \"t\", \"depends_on\": [\"b7f3a-d7\"]}]}",
                        "unknown job 'b7f3a-d7'");
    s_expect_error_has ("{\"jobs\": [{\"id\": \"a\", \"type\": \"t\", \"depends_on\": [\"-42\"]}]}",
                        "unknown job '-42'");
    s_expect_error_has ("{\"jobs\": [{\"id\": \"a\", \"type\": \"t\", \"depends_on\": [\"b 1-42\"]}]}",
                        "unknown job 'b 1-42'");
    //  Long names are cut in messages.
    char json [1024];
    snprintf (json, sizeof json,
              "{\"jobs\": [{\"id\": \"a\", \"type\": \"t\", \"depends_on\": [\"%0200d\"]}]}", 0);
    s_expect_error_has (json, "unknown job '0000000000000000000000000000000000000000000000"
                        "000000000000000000...'");
}

static void
test_dagdoc_is_job_id (void **state)
{
    (void) state;
    assert_true (dq_dagdoc_is_job_id ("b7f3a-42"));
    assert_true (dq_dagdoc_is_job_id ("b-1"));
    assert_true (dq_dagdoc_is_job_id ("host.a:b-c-0"));
    assert_false (dq_dagdoc_is_job_id ("b7f3a-d7"));
    assert_false (dq_dagdoc_is_job_id ("b7f3a-"));
    assert_false (dq_dagdoc_is_job_id ("-42"));
    assert_false (dq_dagdoc_is_job_id ("upload"));
    assert_false (dq_dagdoc_is_job_id ("a b-1"));
    assert_false (dq_dagdoc_is_job_id (NULL));
    char longid [80];
    memset (longid, 'a', sizeof longid);
    strcpy (longid + 60, "-12345");      //  66 bytes
    assert_false (dq_dagdoc_is_job_id (longid));
}

static void
test_dagdoc_limits (void **state)
{
    (void) state;
    char err [DQ_DAGDOC_ERR_SIZE];
    const char *three =
        "{\"jobs\": [{\"id\": \"a\", \"type\": \"t\"}, {\"id\": \"b\", \"type\": \"t\"},"
        " {\"id\": \"c\", \"type\": \"t\", \"depends_on\": [\"a\", \"b\"]}]}";
    dq_dagdoc_limits_t limits = { .max_jobs = 2 };
    assert_null (dq_dagdoc_parse_limits (three, strlen (three), &limits, err, sizeof err));
    assert_string_equal (err, "'jobs' has 3 jobs, over the limit of 2");
    limits = (dq_dagdoc_limits_t) { .max_deps = 1 };
    assert_null (dq_dagdoc_parse_limits (three, strlen (three), &limits, err, sizeof err));
    assert_string_equal (err, "jobs[2] (id 'c'): 'depends_on' has 2 entries, over the "
                         "limit of 1");
    limits = (dq_dagdoc_limits_t) { .max_size = 20 };
    assert_null (dq_dagdoc_parse_limits (three, strlen (three), &limits, err, sizeof err));
    char expected [100];
    snprintf (expected, sizeof expected, "the document is %zu bytes, over the limit of 20",
              strlen (three));
    assert_string_equal (err, expected);
    limits = (dq_dagdoc_limits_t) { .max_jobs = 3, .max_deps = 2, .max_size = strlen (three) };
    dq_dagdoc_t *doc = dq_dagdoc_parse_limits (three, strlen (three), &limits, err, sizeof err);
    assert_non_null (doc);
    dq_dagdoc_destroy (&doc);
    //  The default deps limit is 1024 entries.
    size_t size = 64 + 1025 * 12;
    char *json = malloc (size);
    assert_non_null (json);
    size_t n = (size_t) snprintf (json, size, "{\"jobs\": [{\"id\": \"a\", \"type\": \"t\", \"depends_on\": [");
    for (int i = 0; i < 1025; i++)
        n += (size_t) snprintf (json + n, size - n, "%s\"x-%d\"", i? ",": "", i);
    n += (size_t) snprintf (json + n, size - n, "]}]}");
    assert_null (dq_dagdoc_parse (json, n, err, sizeof err));
    assert_string_equal (err, "jobs[0] (id 'a'): 'depends_on' has 1025 entries, over the "
                         "limit of 1024");
    free (json);
}

//  A payload over 64 MiB is refused, in each of its three forms.
static void
test_dagdoc_payload_too_big (void **state)
{
    (void) state;
    size_t big = DQ_PROTO_PAYLOAD_MAX + 1;
    char *json = malloc (big + 200);
    assert_non_null (json);
    char err [DQ_DAGDOC_ERR_SIZE];
    size_t n = (size_t) sprintf (json, "{\"jobs\": [{\"id\": \"a\", \"type\": \"t\", \"payload_text\": \"");
    memset (json + n, 'x', big);
    n += big;
    n += (size_t) sprintf (json + n, "\"}]}");
    assert_null (dq_dagdoc_parse (json, n, err, sizeof err));
    assert_string_equal (err, "jobs[0] (id 'a'): payload is 67108865 bytes, over the "
                         "limit of 67108864");
    //  As JSON text the quotes make it 2 bytes longer still.
    n = (size_t) sprintf (json, "{\"jobs\": [{\"id\": \"a\", \"type\": \"t\", \"payload\": \"");
    memset (json + n, 'x', big - 2);
    n += big - 2;
    n += (size_t) sprintf (json + n, "\"}]}");
    assert_null (dq_dagdoc_parse (json, n, err, sizeof err));
    assert_string_equal (err, "jobs[0] (id 'a'): 'payload' is over the limit of 67108864 "
                         "bytes as JSON text");
    free (json);
}

//  100,000 jobs: a chain with fan-in from a few earlier jobs, plus
//  dependencies on existing job ids.
static void
test_dagdoc_100k_jobs (void **state)
{
    (void) state;
    const uint32_t njobs = 100000;
    size_t cap = (size_t) njobs * 160 + 64;
    char *json = malloc (cap);
    assert_non_null (json);
    size_t n = (size_t) snprintf (json, cap, "{\"name\": \"big\", \"key\": \"k\", \"jobs\": [");
    for (uint32_t i = 0; i < njobs; i++) {
        n += (size_t) snprintf (json + n, cap - n,
                                "%s{\"id\": \"job%u\", \"type\": \"echo\", \"payload\": {\"n\": %u}",
                                i? ",\n": "", i, i);
        if (i > 0) {
            n += (size_t) snprintf (json + n, cap - n, ", \"depends_on\": [\"job%u\"", i - 1);
            if (i > 10)
                n += (size_t) snprintf (json + n, cap - n, ", \"job%u\"", i / 2);
            if (i % 1000 == 0)
                n += (size_t) snprintf (json + n, cap - n, ", \"b7f3a-%u\"", i);
            n += (size_t) snprintf (json + n, cap - n, "]");
        }
        n += (size_t) snprintf (json + n, cap - n, "}");
        assert_true (n < cap - 200);
    }
    n += (size_t) snprintf (json + n, cap - n, "]}");
    char err [DQ_DAGDOC_ERR_SIZE];
    dq_dagdoc_t *doc = dq_dagdoc_parse (json, n, err, sizeof err);
    if (!doc)
        print_error ("%s\n", err);
    assert_non_null (doc);
    assert_int_equal (dq_dagdoc_njobs (doc), njobs);
    assert_string_equal (dq_dagdoc_name (doc), "big");
    assert_string_equal (dq_dagdoc_key (doc), "k");
    const dq_jobspec_t *j = dq_dagdoc_jobs (doc);
    for (uint32_t i = 0; i < njobs; i++) {
        char name [32], payload [32];
        snprintf (name, sizeof name, "job%u", i);
        snprintf (payload, sizeof payload, "{\"n\":%u}", i);
        assert_string_equal (j [i].name, name);
        s_assert_payload (&j [i], payload);
        uint32_t expect = i == 0? 0: 1 + (i > 10) + (i % 1000 == 0);
        assert_int_equal (j [i].ndeps, expect);
        if (i > 0) {
            assert_int_equal (j [i].deps [0].idx, i - 1);
            if (i > 10)
                assert_int_equal (j [i].deps [1].idx, i / 2);
            if (i % 1000 == 0) {
                assert_int_equal (j [i].deps [expect - 1].idx, -1);
                assert_non_null (j [i].deps [expect - 1].id);
            }
        }
    }
    dq_dagdoc_destroy (&doc);

    //  An error deep in the document names the right job.
    char *bad = strstr (json, "\"job77777\", \"type\": \"echo\"");
    assert_non_null (bad);
    memcpy (bad + 21, "ech!", 4);
    assert_null (dq_dagdoc_parse (json, n, err, sizeof err));
    assert_string_equal (err, "jobs[77777] (id 'job77777'): 'type' must be 1 to 128 "
                         "characters from [A-Za-z0-9_.:-], not 'ech!'");
    free (json);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_dagdoc_example_from_issue),
        cmocka_unit_test (test_dagdoc_all_options),
        cmocka_unit_test (test_dagdoc_local_wins_and_forward_refs),
        cmocka_unit_test (test_dagdoc_payload_json_text),
        cmocka_unit_test (test_dagdoc_base64),
        cmocka_unit_test (test_dagdoc_top_level_errors),
        cmocka_unit_test (test_dagdoc_job_errors),
        cmocka_unit_test (test_dagdoc_dependency_errors),
        cmocka_unit_test (test_dagdoc_is_job_id),
        cmocka_unit_test (test_dagdoc_limits),
        cmocka_unit_test (test_dagdoc_payload_too_big),
        cmocka_unit_test (test_dagdoc_100k_jobs),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
