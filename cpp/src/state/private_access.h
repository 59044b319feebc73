// Reading and setting members libtorch declares private and offers no accessor for (its LR
// schedulers' state). Access checks do not apply to the template arguments of an explicit
// instantiation, so a member pointer taken there can be handed out; it names the member by type,
// as the class's own code would, never by offset. Private to the state layer.
#pragma once

// Declares `Tag` and instantiates the member pointer `&Class::member` (of type `Type Class::*`);
// read it as object.*member_pointer(Tag{}). Use at namespace scope in one .cpp file.
#define FABRICCKPT_PRIVATE_MEMBER(Tag, Class, Type, member) \
  struct Tag {                                              \
    using type = Type Class::*;                             \
    friend type member_pointer(Tag);                        \
  };                                                        \
  template <typename Tag::type Member>                      \
  struct Tag##Access {                                      \
    friend typename Tag::type member_pointer(Tag) { return Member; } \
  };                                                        \
  template struct Tag##Access<&Class::member>
