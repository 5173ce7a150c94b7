# Proves a layer's include path is closed: compiles one-line probes with the
# include directories a layer's own sources get (INCS, `|`-separated) and
# compile flags (FLAGS). OK (a header the layer may include) must compile;
# every header in BAD (`|`-separated; <x.h> or "dir/x.h") must fail.
# Run by ctest (layering_<dir>); see sc_layer_probe in CMakeLists.txt.
string(REPLACE "|" ";" INCS "${INCS}")
string(REPLACE "|" ";" BAD "${BAD}")
string(REPLACE "|" ";" FLAGS "${FLAGS}")
set(args)
foreach(i ${INCS})
  list(APPEND args "-I${i}")
endforeach()
file(MAKE_DIRECTORY ${WORK})
function(probe header expect_ok)
  if(header MATCHES "^<")
    set(line "#include ${header}")
  else()
    set(line "#include \"${header}\"")
  endif()
  file(WRITE ${WORK}/probe.c "${line}\nint sc_layer_probe;\n")
  execute_process(COMMAND ${CC} ${FLAGS} ${args} -fsyntax-only ${WORK}/probe.c
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  if(expect_ok AND NOT rc EQUAL 0)
    message(FATAL_ERROR "layer ${LAYER}: allowed ${header} does not compile:\n${out}")
  elseif(NOT expect_ok AND rc EQUAL 0)
    message(FATAL_ERROR "layer ${LAYER}: ${header} is reachable, but this layer must not include it")
  endif()
  if(NOT expect_ok)
    message(STATUS "layer ${LAYER}: ${header} refused, as it must be")
  endif()
endfunction()
probe("${OK}" TRUE)
foreach(h ${BAD})
  probe("${h}" FALSE)
endforeach()

# What the include path cannot stop: paths that climb out of the folder, and
# Lua reached through a versioned system path.
file(GLOB files ${SRC}/${LAYER}/*.c ${SRC}/${LAYER}/*.h)
foreach(f ${files})
  file(STRINGS ${f} lines REGEX "^[ \t]*#[ \t]*include")
  foreach(l ${lines})
    if(l MATCHES "\\.\\./" OR l MATCHES "[<\"/]lua[0-9.]*/" OR l MATCHES "l(ua|auxlib|ualib)\\.h")
      message(FATAL_ERROR "${f}: `${l}` breaks layer ${LAYER}")
    endif()
  endforeach()
endforeach()
