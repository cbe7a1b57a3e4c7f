"""Two tiny lightweight components and pipelines for the local runner's own behaviour (a few seconds, no model).

Kept out of the test modules: kfp reads the annotations of a component function, which ``from __future__ import
annotations`` would turn into strings.
"""

from kfp import dsl


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def echo_op(text: str) -> str:
    print(f"echo says {text}")
    return text


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def fail_op(text: str):
    for number in range(40):
        print(f"line {number}")
    raise ValueError(f"boom: {text}")


@dsl.pipeline(name="echo")
def echo_pipeline(text: str) -> str:
    return echo_op(text=text).set_display_name("echo").output


@dsl.pipeline(name="echo-then-fail")
def failing_pipeline(text: str):
    fail_op(text=echo_op(text=text).set_display_name("echo").output).set_display_name("fail")
