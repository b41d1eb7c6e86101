# The clients' tests (gistmem-chat and the Python package gistmem_client), written as Python
# unittest modules beside this file.
#
# Contract: tests/integration/CMakeLists.txt does `include(chat_tests.cmake)` after the
# targets gistmem-chat (clients/) and gistmem-server exist; the tests against the real server
# are registered only when gistmem-server does. They get the binaries through the environment
# (GISTMEM_CHAT, GISTMEM_SERVER), start gistmem-server themselves with --model (the fixture
# tests/fixtures/models/llama-gqa-bf16), --db (a temp dir) and --listen 127.0.0.1:0, read its
# "listening on HOST:PORT" line, and stop it with SIGTERM (or SIGKILL where a crash is the
# point). Extra server flags, if the server ever needs some for tests: the cache variable
# GISTMEM_CHAT_TEST_SERVER_ARGS.
#
# Tests and labels:
#   chat_python_stubs       set-up: clients/python/generate_stubs.sh (fixture chat_python_stubs)
#   chat_fake_server_test   both clients against a scripted fake server (label unit)
#   chat_cli_test           gistmem-chat against gistmem-server (label integration)
#   chat_python_test        gistmem_client against gistmem-server (label integration)

set(GISTMEM_CHAT_TEST_PYTHON /usr/bin/python3 CACHE FILEPATH
  "Python with grpcio for the chat_* tests (Debian's python3-grpcio lives in /usr/bin/python3)")
set(GISTMEM_CHAT_TEST_SERVER_ARGS "" CACHE STRING
  "Extra gistmem-server flags for the chat_* tests, shell-quoted")

execute_process(COMMAND ${GISTMEM_CHAT_TEST_PYTHON} -c "import grpc, google.protobuf"
  RESULT_VARIABLE chat_python_has_grpc OUTPUT_QUIET ERROR_QUIET)
if(NOT chat_python_has_grpc EQUAL 0)
  message(WARNING "chat tests: ${GISTMEM_CHAT_TEST_PYTHON} cannot import grpc; only "
    "chat_cli_test is registered (install python3-grpcio or set GISTMEM_CHAT_TEST_PYTHON)")
endif()

set(chat_test_environment
  "GISTMEM_CHAT=$<TARGET_FILE:gistmem-chat>"
  "GISTMEM_TEST_MODEL=${PROJECT_SOURCE_DIR}/tests/fixtures/models/llama-gqa-bf16"
  "GISTMEM_SERVER_EXTRA_ARGS=${GISTMEM_CHAT_TEST_SERVER_ARGS}"
  # Keep the source tree free of __pycache__ folders.
  "PYTHONDONTWRITEBYTECODE=1")
if(TARGET gistmem-server)
  list(APPEND chat_test_environment "GISTMEM_SERVER=$<TARGET_FILE:gistmem-server>")
else()
  message(STATUS "chat tests: no gistmem-server target, so only the fake-server tests")
endif()

# gistmem_chat_add_test(NAME LABELS [needs_grpc] [needs_server])
function(gistmem_chat_add_test name labels)
  if("needs_server" IN_LIST ARGN AND NOT TARGET gistmem-server)
    return()
  endif()
  if("needs_grpc" IN_LIST ARGN AND NOT chat_python_has_grpc EQUAL 0)
    return()
  endif()
  add_test(NAME ${name}
    COMMAND ${GISTMEM_CHAT_TEST_PYTHON} -m unittest -v ${name}
    WORKING_DIRECTORY ${CMAKE_CURRENT_FUNCTION_LIST_DIR})
  set_tests_properties(${name} PROPERTIES LABELS "${labels}" TIMEOUT 900
    ENVIRONMENT "${chat_test_environment}")
  if("needs_grpc" IN_LIST ARGN)
    set_tests_properties(${name} PROPERTIES FIXTURES_REQUIRED chat_python_stubs)
  endif()
endfunction()

if(chat_python_has_grpc EQUAL 0)
  add_test(NAME chat_python_stubs COMMAND ${PROJECT_SOURCE_DIR}/clients/python/generate_stubs.sh)
  set_tests_properties(chat_python_stubs PROPERTIES FIXTURES_SETUP chat_python_stubs
    LABELS "unit;integration" ENVIRONMENT "PYTHON=${GISTMEM_CHAT_TEST_PYTHON}")
endif()

gistmem_chat_add_test(chat_fake_server_test unit needs_grpc)
gistmem_chat_add_test(chat_cli_test integration needs_server)
gistmem_chat_add_test(chat_python_test integration needs_grpc needs_server)
