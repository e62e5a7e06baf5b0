# The libFuzzer harnesses of fuzz/ run for 30 s each on every `make test`: fuzz.build builds
# them with clang (fuzz/CMakeLists.txt, its own project, in build/fuzz; incremental after
# the first time), then fuzz.safetensors, fuzz.config and fuzz.bpe_tokenizer each mutate a
# fresh copy of their committed seeds (fuzz/corpus/NAME/, never written to). A crash, a
# sanitizer report, a leak, an exception other than moe::Error, an input running over 10 s
# or a broken round-trip property fails the test and leaves the input in
# build/fuzz/work/NAME/findings/. Without clang, fuzz/run.sh exits 77: skipped.
#
# Not in a MOE_SANITIZE build (make test-asan): the harnesses are sanitized already, and the
# normal `make test` runs them.
if(MOE_SANITIZE)
  return()
endif()

set(MOE_FUZZ_RUN ${PROJECT_SOURCE_DIR}/fuzz/run.sh --build-dir ${CMAKE_BINARY_DIR}/fuzz)
add_test(NAME fuzz.build COMMAND ${MOE_FUZZ_RUN} --build-only)
# The first build compiles libmoe's sources once more with clang and the sanitizers.
set_tests_properties(fuzz.build PROPERTIES FIXTURES_SETUP fuzz_harnesses
                     SKIP_RETURN_CODE 77 TIMEOUT 1800)
foreach(harness safetensors config bpe_tokenizer)
  add_test(NAME fuzz.${harness}
           COMMAND ${MOE_FUZZ_RUN} --no-build --fresh ${harness} 30)
  # 30 s of fuzzing plus the time to load the seeds and, on a finding, write it out.
  set_tests_properties(fuzz.${harness} PROPERTIES FIXTURES_REQUIRED fuzz_harnesses
                       SKIP_RETURN_CODE 77 TIMEOUT 120)
endforeach()
