# The `moe` command against hostile input, one ctest test per class of bad input
# (tests/bad_input/run_cases.py says what each class covers and what every case checks:
# exit status, a one-line error naming the file, key or tensor at fault, bounded time and
# peak memory, and the good run's checkpoint byte-identical afterwards).
#
# bad_input.setup (the fixture) runs make_cases.py: it trains a tiny run with the real
# command (about 1 s) and writes every hostile input into build/bad_input/cases: deeply
# nested JSON, FIFOs, a sparse 8 GB data file (never written: it takes no disk space, but
# do not copy build/bad_input with a tool that fills holes), tampered checkpoints, a header
# of 200,000 tensors, a file name that is not UTF-8. Each class then works in
# build/bad_input/work/CLASS, which it recreates, so the classes run in parallel (ctest -j).
#
# In a MOE_SANITIZE build (make test-asan) time limits are 4x longer and memory bounds 4x
# higher (--sanitized); a sanitizer report fails a case by its exit status (86).
set(MOE_BAD_INPUT_DIR ${CMAKE_BINARY_DIR}/bad_input)
set(MOE_BAD_INPUT_SCRIPTS ${CMAKE_CURRENT_SOURCE_DIR}/bad_input)
set(MOE_BAD_INPUT_FLAGS "")
set(MOE_BAD_INPUT_SETUP_TIMEOUT 120)
if(MOE_SANITIZE)
  set(MOE_BAD_INPUT_FLAGS --sanitized)
  set(MOE_BAD_INPUT_SETUP_TIMEOUT 600)
endif()

add_test(NAME bad_input.setup
         COMMAND python3 ${MOE_BAD_INPUT_SCRIPTS}/make_cases.py
                 --moe $<TARGET_FILE:moe_cli> --out ${MOE_BAD_INPUT_DIR}
                 --timeout ${MOE_BAD_INPUT_SETUP_TIMEOUT})
set_tests_properties(bad_input.setup PROPERTIES FIXTURES_SETUP bad_input
                     TIMEOUT ${MOE_BAD_INPUT_SETUP_TIMEOUT})

foreach(class 1_deep_json 2_not_regular_file 3_memory 4_non_finite 5_dotted_keys
              6_strict_numbers 7_non_utf8_names 8_run_dir 9_val_fraction 10_many_tensors
              11_stale_tmp_and_internals 12_vision 13_multitask)
  add_test(NAME bad_input.${class}
           COMMAND python3 ${MOE_BAD_INPUT_SCRIPTS}/run_cases.py
                   --moe $<TARGET_FILE:moe_cli> --dir ${MOE_BAD_INPUT_DIR} --class ${class}
                   ${MOE_BAD_INPUT_FLAGS})
  # Each class takes about a second here; every case has its own 30 s limit (15 s for the
  # 200,000-tensor header), 4x under the sanitizers.
  set_tests_properties(bad_input.${class} PROPERTIES FIXTURES_REQUIRED bad_input TIMEOUT 300)
endforeach()
