"""What the operator surfaces show, as plain data: the admin's pages and the command's ``show``
render these models. ``formatting`` (how values and step names read), ``queries`` (the bounded
database reads), ``workflow_page`` (one workflow's timeline, errors and banners) and ``lists``
(the overview, stranded, overdue, waiting, repetitions and branch-children pages).

Nothing here imports ``django.contrib.admin``: the command works in a project without the admin.
"""
