# stella_generate(TARGET <target> PROTOS <a.proto> [<b.proto> ...] [IMPORT_DIRS <dir> ...]
#                 [OUT_DIR <dir>])
#
# Runs protoc with --cpp_out and protoc-gen-stella on each proto and adds the generated
# <name>.pb.cc/.h and <name>.stella.cc/.h to <target>, which then links Stella::sdk. Each proto is
# named relative to the first import directory that holds it (its own directory if none does);
# Stella's protos (stella/router/v1/options.proto) are always importable.
#
#   add_library(greeter_proto STATIC)
#   stella_generate(TARGET greeter_proto PROTOS greeter.proto)
#   target_link_libraries(greeter_service PRIVATE greeter_proto)
include_guard(GLOBAL)

function(stella_generate)
  cmake_parse_arguments(ARG "" "TARGET;OUT_DIR" "PROTOS;IMPORT_DIRS" ${ARGN})
  if(NOT ARG_TARGET OR NOT ARG_PROTOS)
    message(FATAL_ERROR "stella_generate: TARGET and PROTOS are required")
  endif()
  if(NOT TARGET ${ARG_TARGET})
    message(FATAL_ERROR "stella_generate: TARGET ${ARG_TARGET} is not a target; create it first "
                        "(for instance add_library(${ARG_TARGET} STATIC))")
  endif()
  if(NOT STELLA_PROTO_DIR)
    message(FATAL_ERROR "stella_generate: STELLA_PROTO_DIR is not set; use find_package(Stella)")
  endif()
  set(out_dir "${ARG_OUT_DIR}")
  if(NOT out_dir)
    set(out_dir "${CMAKE_CURRENT_BINARY_DIR}/stella_generated")
  endif()
  file(MAKE_DIRECTORY "${out_dir}")

  set(import_dirs)
  foreach(dir IN LISTS ARG_IMPORT_DIRS)
    get_filename_component(dir "${dir}" ABSOLUTE)
    list(APPEND import_dirs "${dir}")
  endforeach()

  set(outputs)
  foreach(proto IN LISTS ARG_PROTOS)
    get_filename_component(proto_path "${proto}" ABSOLUTE)
    if(NOT EXISTS "${proto_path}")
      message(FATAL_ERROR "stella_generate: ${proto} does not exist (looked at ${proto_path})")
    endif()
    # The proto's name as protoc sees it: relative to the import directory that holds it.
    set(relative "")
    foreach(dir IN LISTS import_dirs)
      file(RELATIVE_PATH candidate "${dir}" "${proto_path}")
      if(NOT candidate MATCHES "^\\.\\./")
        set(relative "${candidate}")
        break()
      endif()
    endforeach()
    set(proto_import_dirs ${import_dirs})
    if(relative STREQUAL "")
      get_filename_component(own_dir "${proto_path}" DIRECTORY)
      get_filename_component(relative "${proto_path}" NAME)
      list(APPEND proto_import_dirs "${own_dir}")
    endif()
    list(APPEND proto_import_dirs "${STELLA_PROTO_DIR}")
    list(REMOVE_DUPLICATES proto_import_dirs)
    set(include_flags)
    foreach(dir IN LISTS proto_import_dirs)
      list(APPEND include_flags "-I${dir}")
    endforeach()
    string(REGEX REPLACE "\\.proto$" "" base "${relative}")
    set(generated "${out_dir}/${base}.pb.h" "${out_dir}/${base}.pb.cc"
                  "${out_dir}/${base}.stella.h" "${out_dir}/${base}.stella.cc")
    add_custom_command(
      OUTPUT ${generated}
      COMMAND protobuf::protoc ${include_flags} "--cpp_out=${out_dir}" "--stella_out=${out_dir}"
              "--plugin=protoc-gen-stella=$<TARGET_FILE:Stella::protoc-gen-stella>"
              "${proto_path}"
      DEPENDS "${proto_path}" Stella::protoc-gen-stella protobuf::protoc
      COMMENT "protoc-gen-stella: ${relative}"
      VERBATIM)
    list(APPEND outputs ${generated})
  endforeach()

  target_sources(${ARG_TARGET} PRIVATE ${outputs})
  # SYSTEM: warnings and lint findings in generated code are not the user's to fix.
  target_include_directories(${ARG_TARGET} SYSTEM PUBLIC "$<BUILD_INTERFACE:${out_dir}>")
  target_link_libraries(${ARG_TARGET} PUBLIC Stella::sdk)
endfunction()
