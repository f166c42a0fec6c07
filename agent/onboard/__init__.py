"""Onboarding a meter: capture its bytes, detect its settings, propose and check a config.

Modules::

    capfile      the capture file format (writer and reader)
    lineformat   serial settings as ``9600 8N1``
    visible      bytes shown with their control codes named
    detect       which baud rate and character format a meter uses, by listening
    capture      the listening loop behind ``coffee-telemetry capture``
    replay       a capture played onto a pseudo-terminal at its own pace
    labels       label/value pairs on a ticket line, and the field each label means
    tickets      where tickets end and which line is which, read off a capture
    propose      which driver and options read a capture, and how well
    texts        the messages, in Portuguese and English
"""
